//! Balancing languages by centring (see the parent module): each language's running mean, the
//! centres taken from it, every chunk's centred length, and the query's centring.

use super::{Language, VectorIndex};

/// Refresh the language centres (and every chunk's centred length) once a language's mean has
/// moved this far (Euclidean) since they were taken; a chunk of a large collection moves it by
/// about 1/n, so the refresh runs rarely while the error stays far below a score's precision.
const CENTRE_TOLERANCE: f64 = 1e-4;

/// Languages whose chunks are balanced against each other, as row slots.
pub(super) const LANGUAGES: [Language; 2] = [Language::Ru, Language::En];

pub(super) fn language_slot(language: Language) -> u8 {
    LANGUAGES.iter().position(|&l| l == language).expect("every language has a slot") as u8
}

impl VectorIndex {
    /// Ranks chunks of different languages more by what they say than by their language, at
    /// `strength` (0: raw cosine; 1: fully balanced; see the module's documentation); for
    /// multilingual models.
    pub fn balance_languages(mut self, strength: f32) -> VectorIndex {
        self.balance = strength.clamp(0.0, 1.0);
        self.refresh_centres(true);
        self
    }

    /// Each language's current mean vector (zeros for a language with no chunks).
    pub(super) fn current_means(&self) -> Vec<Vec<f64>> {
        self.language_sums
            .iter()
            .map(|(sum, count)| {
                sum.iter().map(|s| if *count == 0 { 0.0 } else { s / *count as f64 }).collect()
            })
            .collect()
    }

    /// Retakes the centres from the running means when they have moved past the tolerance (or
    /// when `force`d), recomputing every chunk's centred length.
    pub(super) fn refresh_centres(&mut self, force: bool) {
        // Unbalanced, the centres stay zero and each length is the vector's own (1): nothing to
        // retake as the means move.
        if self.balance == 0.0 && !force {
            return;
        }
        let means = self.current_means();
        let moved = means.iter().zip(&self.centred_means).any(|(now, then)| {
            now.iter().zip(then).map(|(a, b)| (a - b) * (a - b)).sum::<f64>().sqrt() > CENTRE_TOLERANCE
        });
        if !force && !moved {
            return;
        }
        let alpha = f64::from(self.balance);
        self.centres = means.iter().map(|mean| mean.iter().map(|m| (alpha * m) as f32).collect()).collect();
        self.centred_means = means;
        self.centred_lengths = (0..self.rows.len()).map(|row| self.centred_length(row)).collect();
    }

    /// `|p − centre(L)|` for a row, with the centres as they stand.
    pub(super) fn centred_length(&self, row: usize) -> f32 {
        let centre = &self.centres[self.rows[row].language as usize];
        let vector = &self.data[row * self.dimension..(row + 1) * self.dimension];
        vector.iter().zip(centre).map(|(v, c)| (v - c) * (v - c)).sum::<f32>().sqrt().max(f32::EPSILON)
    }

    pub(super) fn account(&mut self, row: usize, sign: f64) {
        let (sum, count) = &mut self.language_sums[self.rows[row].language as usize];
        for (s, v) in sum.iter_mut().zip(&self.data[row * self.dimension..(row + 1) * self.dimension]) {
            *s += sign * f64::from(*v);
        }
        if sign > 0.0 {
            *count += 1;
        } else {
            *count -= 1;
        }
    }

    /// The query's mean similarity to each language's chunks.
    pub(super) fn language_means(&self, query: &[f32]) -> Vec<f32> {
        self.language_sums
            .iter()
            .map(|(sum, count)| {
                if *count == 0 {
                    return 0.0;
                }
                let dot: f64 = sum.iter().zip(query).map(|(s, q)| s * f64::from(*q)).sum();
                (dot / *count as f64) as f32
            })
            .collect()
    }

    /// The query less its language's centre, normalised. A question in a language the index holds
    /// no chunks of is left as it is.
    pub(super) fn centre_query(&self, query: &[f32], language: Language) -> Vec<f32> {
        let slot = language_slot(language) as usize;
        if self.balance == 0.0 || self.language_sums[slot].1 == 0 {
            return query.to_vec();
        }
        let mut centred: Vec<f32> = query.iter().zip(&self.centres[slot]).map(|(q, c)| q - c).collect();
        let length = centred.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::EPSILON);
        centred.iter_mut().for_each(|x| *x /= length);
        centred
    }
}
