//! The client's side: images into a query, a result into predictions.
//!
//! A query holds one seeded LWE ciphertext list per image: the masks are regenerated from
//! one seed, so an image of `n` pixels costs `8n` bytes of bodies plus the seed. Pixel `x`
//! is encrypted as the plaintext `x u` (`u`: the first stage's input unit) under the big
//! (GLWE-derived) key with the set's fresh-encryption noise.

use std::path::Path;

use hecnn_compile::circuit::Read;
use hecnn_compile::circuit_file::CircuitFile;
use hecnn_compile::reference::argmax;
use hecnn_model::io::read_limited;
use serde::de::DeserializeOwned;
use tfhe::core_crypto::prelude::{
    CiphertextModulus, ContiguousEntityContainer, LweCiphertextCount, LweCiphertextList, LweSize,
    PlaintextList, SeededLweCiphertextList, decrypt_lwe_ciphertext,
    encrypt_seeded_lwe_ciphertext_list, new_seeder,
};
use tfhe::named::Named;
use tfhe_versionable::Unversionize;

use crate::encoding::LevelScale;
use crate::envelope::{self, Binding, RuntimeFile, payload};
use crate::error::{InputError, Mismatch, RuntimeError};
use crate::file_kind::FileKind;
use crate::keys::ClientKey;

payload!(
    /// A query as stored: one seeded list per image.
    QueryPayload(Vec<SeededLweCiphertextList<Vec<u64>>>) = "hecnn::Query"
);
payload!(
    /// A result as stored: one list of logit ciphertexts per image.
    ResultPayload(Vec<LweCiphertextList<Vec<u64>>>) = "hecnn::Result"
);

/// Size of the ciphertexts a circuit's files hold: the big LWE key's dimension plus one.
pub(crate) fn big_lwe_size(circuit: &CircuitFile) -> LweSize {
    let params = circuit.parameter_set.set().params;
    params
        .glwe_dimension
        .to_equivalent_lwe_dimension(params.polynomial_size)
        .to_lwe_size()
}

/// Encrypted images, ready for the server.
#[derive(Clone)]
pub struct Query {
    pub(crate) binding: Binding,
    pub(crate) images: QueryPayload,
}

/// Encrypted logits, ready for the client.
#[derive(Clone)]
pub struct EncryptedResult {
    pub(crate) binding: Binding,
    pub(crate) logits: ResultPayload,
}

/// One decrypted classification.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Index of the largest logit.
    pub class: usize,
    /// Its name, from the circuit file.
    pub class_name: String,
    /// The decoded logits, `S_j A_j + C_j`.
    pub logits: Vec<f64>,
}

/// The shape of one image's ciphertext list, whichever form it is stored in.
trait ListShape {
    /// Ciphertext size, ciphertext count, modulus.
    fn shape(&self) -> (LweSize, usize, CiphertextModulus<u64>);
}

impl ListShape for SeededLweCiphertextList<Vec<u64>> {
    fn shape(&self) -> (LweSize, usize, CiphertextModulus<u64>) {
        (
            self.lwe_size(),
            self.lwe_ciphertext_count().0,
            self.ciphertext_modulus(),
        )
    }
}

impl ListShape for LweCiphertextList<Vec<u64>> {
    fn shape(&self) -> (LweSize, usize, CiphertextModulus<u64>) {
        (
            self.lwe_size(),
            self.lwe_ciphertext_count().0,
            self.ciphertext_modulus(),
        )
    }
}

/// Parses a file of `kind` holding one ciphertext list per image (`lists` finds them in
/// its payload) for `circuit`: it must be bound to the circuit, hold at least one image,
/// and every list `count` ciphertexts of the circuit's size.
fn parse_lists<P, L>(
    bytes: &[u8],
    circuit: &CircuitFile,
    origin: &str,
    kind: FileKind,
    count: usize,
    lists: impl Fn(&P) -> &[L],
) -> Result<(Binding, P), RuntimeError>
where
    P: DeserializeOwned + Unversionize + Named,
    L: ListShape,
{
    let binding = Binding::of(circuit);
    let payload: P = envelope::from_bytes_bound(bytes, kind, &binding, origin)?;
    let mismatch = |reason| RuntimeError::Mismatch {
        path: origin.to_string(),
        kind,
        reason,
    };
    if lists(&payload).is_empty() {
        return Err(mismatch(Mismatch::NoImage));
    }
    let size = big_lwe_size(circuit);
    for (index, list) in lists(&payload).iter().enumerate() {
        let (lwe_size, len, modulus) = list.shape();
        if lwe_size != size || len != count || !modulus.is_native_modulus() {
            return Err(mismatch(Mismatch::Ciphertexts {
                image: index,
                found: len,
                found_size: lwe_size.0,
                expected: count,
                expected_size: size.0,
            }));
        }
    }
    Ok((binding, payload))
}

impl RuntimeFile for Query {
    const KIND: FileKind = FileKind::Query;
    type Payload = QueryPayload;

    fn binding(&self) -> &Binding {
        &self.binding
    }

    fn payload(&self) -> &QueryPayload {
        &self.images
    }
}

impl RuntimeFile for EncryptedResult {
    const KIND: FileKind = FileKind::Result;
    type Payload = ResultPayload;

    fn binding(&self) -> &Binding {
        &self.binding
    }

    fn payload(&self) -> &ResultPayload {
        &self.logits
    }
}

impl ClientKey {
    /// Encrypts images of raw pixels (one byte each, in the circuit's input order) into
    /// one query.
    pub fn encrypt(&self, circuit: &CircuitFile, images: &[&[u8]]) -> Result<Query, RuntimeError> {
        self.binding()
            .check(&Binding::of(circuit), FileKind::ClientKey, "the client key")?;
        if images.is_empty() {
            return Err(InputError::NoImage.into());
        }
        let expected = circuit.input.shape.len();
        if let Some(bad) = images.iter().find(|image| image.len() != expected) {
            return Err(InputError::Size {
                pixels: bad.len(),
                circuit: circuit.name.clone(),
                shape: circuit.input.shape,
                expected,
            }
            .into());
        }
        let max = circuit.input.max;
        if let Some(pixel) = images
            .iter()
            .flat_map(|image| image.iter())
            .find(|&&p| u32::from(p) > max)
        {
            return Err(InputError::Level {
                pixel: *pixel,
                circuit: circuit.name.clone(),
                max,
            }
            .into());
        }
        let first = circuit.circuit.first();
        let scale = LevelScale::of_stage(first);
        let (key, noise) = self.encryption_key();
        let mut seeder = new_seeder();
        let seeder = seeder.as_mut();
        let lists = images
            .iter()
            .map(|image| {
                let plaintexts = PlaintextList::from_container(
                    image
                        .iter()
                        .map(|&pixel| scale.encode(i64::from(pixel)))
                        .collect::<Vec<_>>(),
                );
                let mut list = SeededLweCiphertextList::new(
                    0u64,
                    key.lwe_dimension().to_lwe_size(),
                    LweCiphertextCount(image.len()),
                    seeder.seed().into(),
                    CiphertextModulus::new_native(),
                );
                encrypt_seeded_lwe_ciphertext_list(&key, &mut list, &plaintexts, noise, seeder);
                list
            })
            .collect();
        Ok(Query {
            binding: self.binding().clone(),
            images: QueryPayload(lists),
        })
    }

    /// Decrypts and decodes a result: per image, the logits `S_j A_j + C_j` with `A_j`
    /// the signed phase in levels of the last stage, and their argmax.
    pub fn decrypt(
        &self,
        circuit: &CircuitFile,
        result: &EncryptedResult,
    ) -> Result<Vec<Prediction>, RuntimeError> {
        let binding = Binding::of(circuit);
        self.binding()
            .check(&binding, FileKind::ClientKey, "the client key")?;
        result
            .binding
            .check(&binding, FileKind::Result, "the result")?;
        let last = circuit.circuit.last();
        let Read::Logits(decoding) = &last.read else {
            unreachable!("validated circuits end with logits")
        };
        let (key, _) = self.encryption_key();
        Ok(result
            .logits
            .0
            .iter()
            .map(|list| {
                let logits: Vec<f64> = list
                    .iter()
                    .enumerate()
                    .map(|(j, ct)| {
                        let accumulator =
                            last.decode_accumulator(decrypt_lwe_ciphertext(&key, &ct).0);
                        decoding.scale[j] * accumulator + decoding.shift[j]
                    })
                    .collect();
                let class = argmax(&logits);
                Prediction {
                    class,
                    class_name: circuit.class_names[class].clone(),
                    logits,
                }
            })
            .collect())
    }
}

impl Query {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.images.0.len()
    }

    /// Whether it holds no image (never, for queries built or loaded here).
    pub fn is_empty(&self) -> bool {
        self.images.0.is_empty()
    }

    /// Reads a query for `circuit`, refusing one of another circuit or of the wrong shape.
    pub fn load(path: &Path, circuit: &CircuitFile) -> Result<Self, RuntimeError> {
        let bytes = read_limited(path, FileKind::Query.size_limit())?;
        Self::from_bytes(&bytes, circuit, &path.display().to_string())
    }

    /// Parses a query for `circuit` (`origin` names it in errors), refusing one of another
    /// circuit or of the wrong shape.
    pub fn from_bytes(
        bytes: &[u8],
        circuit: &CircuitFile,
        origin: &str,
    ) -> Result<Self, RuntimeError> {
        let count = circuit.input.shape.len();
        let (binding, images) = parse_lists(
            bytes,
            circuit,
            origin,
            FileKind::Query,
            count,
            |p: &QueryPayload| &p.0,
        )?;
        Ok(Self { binding, images })
    }
}

impl EncryptedResult {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.logits.0.len()
    }

    /// Whether it holds no image (never, for results built or loaded here).
    pub fn is_empty(&self) -> bool {
        self.logits.0.is_empty()
    }

    /// Reads a result for `circuit`, refusing one of another circuit or of the wrong shape.
    pub fn load(path: &Path, circuit: &CircuitFile) -> Result<Self, RuntimeError> {
        let bytes = read_limited(path, FileKind::Result.size_limit())?;
        Self::from_bytes(&bytes, circuit, &path.display().to_string())
    }

    /// Parses a result for `circuit` (`origin` names it in errors), refusing one of another
    /// circuit or of the wrong shape.
    pub fn from_bytes(
        bytes: &[u8],
        circuit: &CircuitFile,
        origin: &str,
    ) -> Result<Self, RuntimeError> {
        let count = circuit.class_names.len();
        let (binding, logits) = parse_lists(
            bytes,
            circuit,
            origin,
            FileKind::Result,
            count,
            |p: &ResultPayload| &p.0,
        )?;
        Ok(Self { binding, logits })
    }
}
