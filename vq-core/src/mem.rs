//! Memory for large arrays read at random (graph searches).

/// Size of a transparent huge page on x86-64 and aarch64 Linux.
const HUGE_PAGE: usize = 2 << 20;

/// Checks, before an allocation that would abort the process on failure (`vec!`,
/// `Vec::with_capacity`), that `n` values of `T` can be allocated now: a fallible
/// reservation of the same size is made and released. Sizes beyond the address space
/// and sizes the allocator refuses become an error naming `what`.
///
/// (The check cannot promise the later allocation: memory may run out in between.)
///
/// ```
/// assert!(vq_core::mem::check_alloc::<u64>(1000, "lists").is_ok());
/// assert!(vq_core::mem::check_alloc::<u64>(1 << 62, "lists").is_err());
/// ```
///
/// # Errors
/// [`crate::Error::InvalidParameter`] for `what`, with the size asked for.
pub fn check_alloc<T>(n: usize, what: &str) -> crate::Result<()> {
    let refuse = |bytes: String| {
        crate::Error::invalid_param(
            what,
            format!("{n} entries need {bytes} bytes, more than can be allocated"),
        )
    };
    let bytes = n
        .checked_mul(std::mem::size_of::<T>())
        .ok_or_else(|| refuse(format!("{n} × {}", std::mem::size_of::<T>())))?;
    let mut probe: Vec<u8> = Vec::new();
    probe
        .try_reserve_exact(bytes)
        .map_err(|_| refuse(bytes.to_string()))
}

/// An empty vector with room for `capacity` values whose memory the kernel is asked to back
/// with transparent huge pages (Linux `madvise(MADV_HUGEPAGE)`, which matters where the
/// system setting is `madvise`, the common default). A random read over hundreds of
/// megabytes then misses the TLB far less. Elsewhere, for small capacities, or when the
/// kernel refuses, it is an ordinary vector: the advice never changes contents or results.
pub fn vec_with_huge_pages<T>(capacity: usize) -> Vec<T> {
    let v = Vec::with_capacity(capacity);
    advise_huge_pages(&v);
    v
}

/// Makes room for `additional` more values, moving `v` into a huge-page-advised allocation
/// (growing by half, as a vector would double) when its capacity is short.
pub fn reserve_with_huge_pages<T>(v: &mut Vec<T>, additional: usize) {
    let need = v.len() + additional;
    if need <= v.capacity() {
        return;
    }
    let mut bigger = vec_with_huge_pages(need.max(v.capacity() + v.capacity() / 2));
    bigger.append(v);
    *v = bigger;
}

#[allow(unused_variables)]
fn advise_huge_pages<T>(v: &Vec<T>) {
    #[cfg(target_os = "linux")]
    {
        let bytes = v.capacity().saturating_mul(std::mem::size_of::<T>());
        if bytes < 2 * HUGE_PAGE {
            return;
        }
        let start = v.as_ptr() as usize;
        let first = start.next_multiple_of(HUGE_PAGE);
        let end = (start + bytes) / HUGE_PAGE * HUGE_PAGE;
        if end > first {
            // SAFETY: MADV_HUGEPAGE only tells the kernel how to back pages of an allocation
            // this vector owns (the range lies inside its capacity); it never changes their
            // contents, and a failure is harmless, so the return value is ignored.
            unsafe {
                libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
            }
        }
    }
    let _ = HUGE_PAGE;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_keeps_contents() {
        let mut v: Vec<u32> = vec_with_huge_pages(10);
        v.extend(0..10);
        reserve_with_huge_pages(&mut v, 3 << 20);
        assert!(v.capacity() >= (3 << 20) + 10);
        assert_eq!(v, (0..10).collect::<Vec<_>>());
        v.extend(10..(3 << 20));
        assert_eq!(v[12345], 12345);
        reserve_with_huge_pages(&mut v, 0);
        assert_eq!(v.len(), 3 << 20);
    }
}
