//! Sputnik's own CPU kernels for the embedding model: the encoder's 4-bit linear layers against
//! 8-bit activations ([`q4`]), a vectorisable exact GELU and softmax exponential
//! ([`activation`]; the GELU also as a [`candle_core::CustomOp1`] for the tensor path), and the
//! whole encoder over plain slices for a batch of texts without padding ([`encoder`]). They live
//! in a crate of their own so that every build, the test build included, compiles them
//! optimised: unoptimised, a test that embeds text would run many times slower than the
//! product, and the rest of Sputnik need not pay for that in compile time.

pub mod activation;
pub mod encoder;
pub mod q4;

pub use activation::GeluErf;
pub use q4::Q4Matrix;
