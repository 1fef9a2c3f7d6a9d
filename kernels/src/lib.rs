//! Sputnik's own CPU kernels for the embedding model: the encoder's 4-bit linear layers against
//! 8-bit activations ([`q4`]), a vectorisable exact GELU and softmax exponential
//! ([`activation`]; the GELU also as a [`candle_core::CustomOp1`] for the tensor path),
//! attention in 8-bit products where the CPU has VNNI (`attention`, on `int8`'s byte products),
//! and the whole encoder over plain slices for a batch of texts without padding ([`encoder`]).
//! They live
//! in a crate of their own so that every build, the test build included, compiles them
//! optimised: unoptimised, a test that embeds text would run many times slower than the
//! product, and the rest of Sputnik need not pay for that in compile time.

/// Defines a function whose body is compiled three times: for the baseline target, for AVX2
/// with FMA, and for AVX-512 (F and VL) beside them, each running where the CPU has what it
/// needs (checked at run time; the check is a cached load). Loops over f32 values compile to
/// 4-wide SSE on the baseline x86-64 target and to 8-wide AVX2 here: the encoder's element-wise
/// steps (GELU, LayerNorm, biases, softmax, quantising the activations) ran as SSE, about a
/// fifth of an import's samples. With AVX-512 the same loops have 32 vector registers instead
/// of 16, so that GELU's thirteen constants stay in registers instead of being loaded again for
/// every eight values (1.4 cycles a value instead of 2.1). Arithmetic is the same every way
/// (Rust never fuses a multiply and an add unless told to), so results are too.
macro_rules! simd_fn {
    ($(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$attr])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn portable($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            fn avx2($($arg: $ty),*) $(-> $ret)? {
                portable($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
            fn avx512($($arg: $ty),*) $(-> $ret)? {
                portable($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512vl")
                && std::is_x86_feature_detected!("avx2")
                && std::is_x86_feature_detected!("fma")
            {
                #[allow(unsafe_code)]
                // SAFETY: the CPU has AVX-512 F and VL, AVX2 and FMA, checked just above.
                return unsafe { avx512($($arg),*) };
            }
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                #[allow(unsafe_code)]
                // SAFETY: the CPU has AVX2 and FMA, checked just above.
                return unsafe { avx2($($arg),*) };
            }
            portable($($arg),*)
        }
    };
}

/// The first `len` values of `buffer`, which grows (with zeros) when it is shorter and is never
/// shrunk: a buffer reused for inputs of varying sizes, cut to each, was zeroed again each time
/// it grew back (attention's products for a long text after a short one, a product's activations
/// after a narrower product's: 1.4 % of an import's samples, in `memset`). What a call does not
/// write of the prefix keeps an earlier call's values.
pub(crate) fn prefix<T: Copy + Default>(buffer: &mut Vec<T>, len: usize) -> &mut [T] {
    if buffer.len() < len {
        buffer.resize(len, T::default());
    }
    &mut buffer[..len]
}

pub mod activation;
mod attention;
pub mod encoder;
mod int8;
pub mod q4;

pub use activation::GeluErf;
pub use q4::Q4Matrix;
