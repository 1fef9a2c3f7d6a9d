//! Sputnik's own CPU kernels for the embedding model, as [`candle_core::CustomOp1`] operations:
//! the encoder's 4-bit linear layers against 8-bit activations ([`q4`]) and the exact GELU
//! ([`activation`]); and a whole encoder layer over plain slices for one short input
//! ([`encoder`]). They live in a crate of their own so that every build, the test build
//! included, compiles them optimised: unoptimised, a test that embeds text would run many times
//! slower than the product, and the rest of Sputnik need not pay for that in compile time.

pub mod activation;
pub mod encoder;
pub mod q4;

pub use activation::GeluErf;
pub use q4::{Q4MatMul, Q4Matrix};
