//! vq-core integration tests (one binary).

mod edge_cases;
mod flat;
mod io;
mod kernels;
mod pipeline;
