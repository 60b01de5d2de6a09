//! Keys: the client's secret key, and the evaluation key it gives the server.
//!
//! Both are tfhe shortint keys of the circuit's parameter set. The evaluation key is kept
//! and shipped in tfhe's compressed (seeded) form: the keyswitching and bootstrapping keys'
//! masks are regenerated from a seed, so only their bodies travel. The server decompresses
//! it once ([`EvaluationKey::decompress`]); it never sees the secret key.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use hecnn_compile::circuit_file::{BadFingerprint, CircuitFile, Fingerprint};
use hecnn_compile::params::ParameterSetName;
use hecnn_model::io::read_limited;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tfhe::conformance::ParameterSetConformant;
use tfhe::core_crypto::prelude::{DynamicDistribution, LweSecretKeyView};
use tfhe::shortint::atomic_pattern::AtomicPatternParameters;
use tfhe::shortint::ciphertext::MaxDegree;
use tfhe::shortint::parameters::ShortintParameterSet;
use tfhe::shortint::{CompressedServerKey, ServerKey};

use crate::envelope::{self, Binding, RuntimeFile, payload};
use crate::error::{Mismatch, RuntimeError};
use crate::file_kind::FileKind;

payload!(
    /// A client key as stored.
    ClientKeyPayload(tfhe::shortint::ClientKey) = "hecnn::ClientKey"
);
payload!(
    /// An evaluation key as stored.
    EvaluationKeyPayload(CompressedServerKey) = "hecnn::EvaluationKey"
);

/// The client's secret key for one circuit: encrypts queries, decrypts results. It never
/// leaves the client.
#[derive(Clone)]
pub struct ClientKey {
    binding: Binding,
    key: ClientKeyPayload,
}

/// What the server needs to evaluate one circuit for one client, in compressed form.
#[derive(Clone)]
pub struct EvaluationKey {
    binding: Binding,
    key: EvaluationKeyPayload,
}

/// Generates a fresh client key for `circuit` and the evaluation key that goes with it.
pub fn generate(circuit: &CircuitFile) -> (ClientKey, EvaluationKey) {
    let set = circuit.parameter_set.set();
    let binding = Binding::of(circuit);
    let key = tfhe::shortint::ClientKey::new(set.params);
    let evaluation = CompressedServerKey::new(&key);
    (
        ClientKey {
            binding: binding.clone(),
            key: ClientKeyPayload(key),
        },
        EvaluationKey {
            binding,
            key: EvaluationKeyPayload(evaluation),
        },
    )
}

impl RuntimeFile for ClientKey {
    const KIND: FileKind = FileKind::ClientKey;
    type Payload = ClientKeyPayload;

    fn binding(&self) -> &Binding {
        &self.binding
    }

    fn payload(&self) -> &ClientKeyPayload {
        &self.key
    }
}

impl RuntimeFile for EvaluationKey {
    const KIND: FileKind = FileKind::EvaluationKey;
    type Payload = EvaluationKeyPayload;

    fn binding(&self) -> &Binding {
        &self.binding
    }

    fn payload(&self) -> &EvaluationKeyPayload {
        &self.key
    }
}

impl ClientKey {
    /// The key and noise distribution fresh encryptions use: the big (GLWE-derived) LWE
    /// key, as the circuit's first stage reads fresh ciphertexts under it.
    pub(crate) fn encryption_key(&self) -> (LweSecretKeyView<'_, u64>, DynamicDistribution<u64>) {
        self.key.0.encryption_key_and_noise()
    }

    /// Reads a client key for `circuit`, refusing one of another circuit or set.
    pub fn load(path: &Path, circuit: &CircuitFile) -> Result<Self, RuntimeError> {
        let binding = Binding::of(circuit);
        let key: ClientKeyPayload = envelope::load(path, FileKind::ClientKey, &binding)?;
        if key.0.parameters() != ShortintParameterSet::from(circuit.parameter_set.set().params) {
            return Err(RuntimeError::Mismatch {
                path: path.display().to_string(),
                kind: FileKind::ClientKey,
                reason: Mismatch::Parameters(circuit.parameter_set),
            });
        }
        Ok(Self { binding, key })
    }
}

impl EvaluationKey {
    /// Reads an evaluation key for `circuit`, refusing one of another circuit or set, or
    /// one whose dimensions are not those of the set ([`Self::check`]).
    pub fn load(path: &Path, circuit: &CircuitFile) -> Result<Self, RuntimeError> {
        let origin = path.display().to_string();
        let key = Self::from_bytes(
            &read_limited(path, FileKind::EvaluationKey.size_limit())?,
            &origin,
        )?;
        key.check(circuit, &origin)?;
        Ok(key)
    }

    /// Parses an evaluation key file (`origin` names it in errors), checksummed, whatever
    /// circuit it names: a server looks the circuit up by [`RuntimeFile::binding`], then
    /// calls [`Self::check`].
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Self, RuntimeError> {
        let (binding, key) = envelope::from_bytes(bytes, FileKind::EvaluationKey, origin)?;
        Ok(Self { binding, key })
    }

    /// Refuses a key (read from `origin`) made for another circuit or set, or whose
    /// dimensions are not those of the set ([`Self::check_dimensions`]).
    pub fn check(&self, circuit: &CircuitFile, origin: &str) -> Result<(), RuntimeError> {
        self.binding
            .check(&Binding::of(circuit), FileKind::EvaluationKey, origin)?;
        self.check_dimensions(origin)
    }

    /// Refuses a key (read from `origin`) whose dimensions are not those of the parameter
    /// set it names (tfhe's conformance check), so that a crafted key cannot make
    /// evaluation fail half-way. What a table-read worker checks: it holds no circuit.
    pub fn check_dimensions(&self, origin: &str) -> Result<(), RuntimeError> {
        let name = self.parameter_set()?;
        let set = name.set();
        let max_degree = MaxDegree::new(set.lut_boxes() - 1);
        if !self
            .key
            .0
            .is_conformant(&(AtomicPatternParameters::from(set.params), max_degree))
        {
            return Err(RuntimeError::Mismatch {
                path: origin.to_string(),
                kind: FileKind::EvaluationKey,
                reason: Mismatch::Dimensions(name),
            });
        }
        Ok(())
    }

    /// The parameter set the key names.
    pub fn parameter_set(&self) -> Result<ParameterSetName, RuntimeError> {
        ParameterSetName::new(&self.binding.parameter_set).map_err(|unknown| {
            RuntimeError::Corrupted {
                path: "the evaluation key".into(),
                kind: FileKind::EvaluationKey,
                reason: unknown.to_string(),
            }
        })
    }

    /// The key the server evaluates with: masks regenerated from their seeds, the
    /// bootstrapping key converted to the Fourier domain (seconds for `N = 2048`).
    pub fn decompress(&self) -> ServerKey {
        self.key.0.decompress()
    }
}

/// An evaluation key's identity: the SHA-256 of its file, so that a client can ask whether
/// a server holds its key before uploading hundreds of megabytes, a server can check that
/// what arrived is what was named, and a cluster's workers can fetch it by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyId(pub Fingerprint);

impl KeyId {
    /// The identity of a key file's bytes.
    pub fn of(bytes: &[u8]) -> Self {
        Self::from_hasher(Sha256::new_with_prefix(bytes))
    }

    /// The identity of the bytes fed to `hasher` (uploads are hashed as they stream in).
    pub fn from_hasher(hasher: Sha256) -> Self {
        Self(Fingerprint(hasher.finalize().into()))
    }
}

/// 64 hex digits; a precision keeps that many, as for [`Fingerprint`].
impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for KeyId {
    type Err = BadFingerprint;
    fn from_str(text: &str) -> Result<Self, BadFingerprint> {
        text.parse().map(Self)
    }
}
