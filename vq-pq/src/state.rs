//! Small helpers shared by the `save_state` / `load_state` hooks of this crate: every
//! value read back is checked against the shape of the object it is loaded into.

use vq_core::Result;
use vq_core::persist::StateReader;

/// Largest iteration count accepted from a file (bounds training loops after a load).
pub(crate) const MAX_ITER: usize = 1 << 24;

/// Reads the `usize` section `name` and checks that it equals `have`, the value the
/// object `what` was constructed with.
pub(crate) fn expect_usize(r: &mut StateReader, name: &str, have: usize, what: &str) -> Result<()> {
    let v = r.get_usize(name, usize::MAX)?;
    if v != have {
        return Err(r.error(name, format!("{v}, but {what} has {have}")));
    }
    Ok(())
}

/// Reads an `f64` section that must hold a finite value exactly representable as `f32`.
pub(crate) fn get_f32_scalar(r: &mut StateReader, name: &str) -> Result<f32> {
    let v = r.get_f64(name)?;
    let f = v as f32;
    if !v.is_finite() || f64::from(f) != v {
        return Err(r.error(name, format!("{v} is not a finite f32")));
    }
    Ok(f)
}

/// Reads an `f32` array of exactly `len` finite values.
pub(crate) fn get_finite_f32s(r: &mut StateReader, name: &str, len: usize) -> Result<Vec<f32>> {
    let v = r.get_f32s(name)?;
    if v.len() != len {
        return Err(r.error(name, format!("{} values, expected {len}", v.len())));
    }
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(r.error(name, format!("value {i} is {}", v[i])));
    }
    Ok(v)
}
