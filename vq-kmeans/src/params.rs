//! Parameters, with Faiss's `ClusteringParameters` defaults.

use vq_core::{Error, Result};

/// How the initial centroids are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Init {
    /// `k` distinct training points drawn uniformly (Faiss's only method).
    #[default]
    Random,
    /// k-means++: each next centroid drawn with probability proportional to the squared
    /// distance to the nearest centroid so far. `O(n·k·d)`.
    KMeansPlusPlus,
    /// AFK-MC²: k-means++ approximated by Markov chains of `chain_length` steps,
    /// `O(chain_length·k²·d)` — much cheaper than k-means++ for large `n`.
    AfkMc2 {
        /// Markov chain length per centroid (the paper's `m`; 200 is a good default).
        chain_length: usize,
    },
}

impl Init {
    /// Parses `random`, `kmeans++` (or `kmeanspp`), `afkmc2`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for other names.
    pub fn parse(s: &str) -> Result<Init> {
        match s.to_ascii_lowercase().as_str() {
            "random" => Ok(Init::Random),
            "kmeans++" | "kmeanspp" | "k-means++" => Ok(Init::KMeansPlusPlus),
            "afkmc2" | "afk-mc2" => Ok(Init::AfkMc2 { chain_length: 200 }),
            _ => Err(Error::invalid_param(
                "init",
                format!("unknown initialisation `{s}` (random, kmeans++, afkmc2)"),
            )),
        }
    }
}

/// k-means parameters. `KMeansParams::new(k)` gives Faiss's defaults.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct KMeansParams {
    /// Number of centroids.
    pub k: usize,
    /// Lloyd iterations per run (Faiss: 25).
    pub niter: usize,
    /// Runs from different seeds; the best objective is kept (Faiss: 1).
    pub nredo: usize,
    /// Seed of every random choice (Faiss: 1234).
    pub seed: u64,
    /// Normalise centroids to unit L2 norm after each iteration (assignment then uses
    /// inner product).
    pub spherical: bool,
    /// Round centroid coordinates to integers after each iteration.
    pub int_centroids: bool,
    /// Re-train the assignment index on the centroids at each iteration (for indexes
    /// that need training, e.g. a graph over the centroids).
    pub update_index: bool,
    /// Keep the provided initial centroids fixed (only the others move).
    pub frozen_centroids: bool,
    /// Below `k × min_points_per_centroid` training points a warning is recorded
    /// (Faiss: 39).
    pub min_points_per_centroid: usize,
    /// Above `k × max_points_per_centroid` training points a seeded sample of that size
    /// is used (Faiss: 256).
    pub max_points_per_centroid: usize,
    /// Initialisation method.
    pub init: Init,
    /// Stop early when the relative change of the objective falls below this (off by
    /// default, as in Faiss).
    pub tolerance: Option<f64>,
    /// Print progress on stderr.
    pub verbose: bool,
}

impl KMeansParams {
    /// Faiss's defaults for `k` centroids.
    pub fn new(k: usize) -> KMeansParams {
        KMeansParams {
            k,
            niter: 25,
            nredo: 1,
            seed: 1234,
            spherical: false,
            int_centroids: false,
            update_index: false,
            frozen_centroids: false,
            min_points_per_centroid: 39,
            max_points_per_centroid: 256,
            init: Init::Random,
            tolerance: None,
            verbose: false,
        }
    }

    /// Sets `niter`.
    pub fn with_niter(mut self, niter: usize) -> Self {
        self.niter = niter;
        self
    }

    /// Sets `nredo`.
    pub fn with_nredo(mut self, nredo: usize) -> Self {
        self.nredo = nredo;
        self
    }

    /// Sets the seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets the initialisation.
    pub fn with_init(mut self, init: Init) -> Self {
        self.init = init;
        self
    }

    /// Sets spherical k-means.
    pub fn with_spherical(mut self, spherical: bool) -> Self {
        self.spherical = spherical;
        self
    }

    /// Sets the points-per-centroid bounds.
    pub fn with_points_per_centroid(mut self, min: usize, max: usize) -> Self {
        self.min_points_per_centroid = min;
        self.max_points_per_centroid = max;
        self
    }

    /// Sets the early-stop tolerance.
    pub fn with_tolerance(mut self, tol: f64) -> Self {
        self.tolerance = Some(tol);
        self
    }

    /// Checks the values.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the bad field.
    pub fn validate(&self) -> Result<()> {
        if self.k == 0 {
            return Err(Error::invalid_param("k", "must be at least 1"));
        }
        if self.nredo == 0 {
            return Err(Error::invalid_param("nredo", "must be at least 1"));
        }
        if self.max_points_per_centroid == 0 {
            return Err(Error::invalid_param(
                "max_points_per_centroid",
                "must be at least 1",
            ));
        }
        if let Init::AfkMc2 { chain_length: 0 } = self.init {
            return Err(Error::invalid_param("chain_length", "must be at least 1"));
        }
        if let Some(t) = self.tolerance
            && !(t.is_finite() && t >= 0.0)
        {
            return Err(Error::invalid_param("tolerance", "must be finite and >= 0"));
        }
        Ok(())
    }
}
