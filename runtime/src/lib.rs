//! hecnn's encrypted runtime: keys, encryption, evaluation of a compiled circuit over TFHE
//! ciphertexts, decryption. Its implementation follows the circuit file of the compiler
//! stage.
