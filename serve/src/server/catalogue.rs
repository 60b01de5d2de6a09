//! The circuits a server serves, read once from a folder at start.

use std::collections::HashMap;
use std::path::Path;

use hecnn_compile::circuit_file::{CircuitFile, CircuitFileError, Fingerprint};

use crate::api::CircuitInfo;

/// Why the circuits folder cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    /// Listing the folder failed.
    #[error("{path}: {source}")]
    Folder {
        /// The folder.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A circuit file cannot be read.
    #[error(transparent)]
    Circuit(#[from] CircuitFileError),
    /// No circuit file in the folder.
    #[error("{0}: no circuit file (files written by `hecnn compile`)")]
    Empty(String),
}

/// A circuit ready to serve: its file, its bytes as clients download them, its listing.
#[derive(Debug)]
pub struct ServedCircuit {
    /// The circuit (it lives as long as the server: evaluators borrow it).
    pub file: &'static CircuitFile,
    /// Its binary file.
    pub bytes: axum::body::Bytes,
    /// What the listing says of it.
    pub info: CircuitInfo,
}

/// Every circuit served, by fingerprint.
#[derive(Debug)]
pub struct Catalogue {
    circuits: HashMap<Fingerprint, ServedCircuit>,
}

impl Catalogue {
    /// Reads every circuit file of `folder` (other files are skipped; a file that looks
    /// like a circuit but does not read is an error, not skipped).
    pub fn load(folder: &Path) -> Result<Self, CatalogueError> {
        let folder_error = |source| CatalogueError::Folder {
            path: folder.display().to_string(),
            source,
        };
        let mut paths: Vec<_> = std::fs::read_dir(folder)
            .map_err(folder_error)?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(folder_error)?;
        paths.sort();
        let mut circuits = HashMap::new();
        for path in paths {
            if !path.is_file() || !looks_like_circuit(&path) {
                continue;
            }
            let file = CircuitFile::load(&path)?;
            let info = CircuitInfo {
                name: file.name.clone(),
                fingerprint: file.fingerprint(),
                parameter_set: file.parameter_set.to_string(),
                pbs: file.circuit.pbs_count(),
                pixels: file.input.shape.len(),
                class_names: file.class_names.clone(),
            };
            tracing::info!(path = %path.display(), name = %info.name, fingerprint = %info.fingerprint, pbs = info.pbs, "serving circuit");
            let bytes = file.to_bytes().into();
            // Evaluators borrow their circuit for as long as the server runs; the
            // catalogue is read once per process, so this is not a growing leak.
            let file: &'static CircuitFile = Box::leak(Box::new(file));
            circuits.insert(info.fingerprint, ServedCircuit { file, bytes, info });
        }
        if circuits.is_empty() {
            return Err(CatalogueError::Empty(folder.display().to_string()));
        }
        Ok(Self { circuits })
    }

    /// The circuit of this fingerprint.
    pub fn get(&self, fingerprint: &Fingerprint) -> Option<&ServedCircuit> {
        self.circuits.get(fingerprint)
    }

    /// Every circuit's listing, by name.
    pub fn listing(&self) -> Vec<CircuitInfo> {
        let mut list: Vec<_> = self.circuits.values().map(|c| c.info.clone()).collect();
        list.sort_by(|a, b| {
            a.name
                .cmp(&b.name)
                .then(a.fingerprint.0.cmp(&b.fingerprint.0))
        });
        list
    }

    /// Number of circuits.
    pub fn len(&self) -> usize {
        self.circuits.len()
    }

    /// Whether there is none (never, for a loaded catalogue).
    pub fn is_empty(&self) -> bool {
        self.circuits.is_empty()
    }
}

/// Whether a file's first bytes are those of a circuit file.
fn looks_like_circuit(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 256];
    let Ok(mut file) = std::fs::File::open(path) else {
        return false;
    };
    let read = file.read(&mut head).unwrap_or(0);
    CircuitFile::sniff(&head[..read])
}
