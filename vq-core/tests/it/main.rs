//! vq-core integration tests (one binary).

mod flat;
mod io;
mod kernels;
mod pipeline;
