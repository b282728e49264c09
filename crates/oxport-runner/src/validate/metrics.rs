//! Logit comparisons between an export and the reference, accumulated over positions.

/// `log_softmax` of one row in f64.
pub fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
    let log_z = max + sum.ln();
    row.iter().map(|&v| v as f64 - log_z).collect()
}

/// `KL(P_reference ‖ Q_export)` of one position.
pub fn kl(reference: &[f64], export: &[f64]) -> f64 {
    reference
        .iter()
        .zip(export)
        .map(|(&p, &q)| p.exp() * (p - q))
        .sum()
}

pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        // NaN never wins, so a broken export cannot agree by accident.
        if v > row[best] || row[best].is_nan() {
            best = i;
        }
    }
    best
}

/// Running sums over every compared position.
#[derive(Clone, Debug, Default)]
pub struct Accumulator {
    pub positions: usize,
    pub max_abs: f64,
    sum_abs: f64,
    values: usize,
    sum_kl: f64,
    top1_agree: usize,
    /// KL per position, in order, for the plot.
    pub kl_per_position: Vec<f64>,
    /// Negative log-likelihoods of the scored text tokens under the export.
    pub nll: Vec<f64>,
}

impl Accumulator {
    /// Compare `[n * vocab]` logits position by position.
    pub fn add(&mut self, reference: &[f32], export: &[f32], vocab: usize) {
        for (r, e) in reference.chunks(vocab).zip(export.chunks(vocab)) {
            for (&a, &b) in r.iter().zip(e) {
                let d = (a as f64 - b as f64).abs();
                // NaN/inf in the export make the max infinite rather than being skipped by f64::max.
                self.max_abs = if d.is_nan() {
                    f64::INFINITY
                } else {
                    self.max_abs.max(d)
                };
                self.sum_abs += if d.is_nan() { f64::INFINITY } else { d };
                self.values += 1;
            }
            let k = kl(&log_softmax(r), &log_softmax(e));
            let k = if k.is_nan() { f64::INFINITY } else { k };
            self.sum_kl += k;
            self.kl_per_position.push(k);
            self.top1_agree += usize::from(argmax(r) == argmax(e));
            self.positions += 1;
        }
    }

    /// Compare export rows with the reference's top-K form of the same positions (`reference_results.rs`): KL
    /// over the top-K tokens plus one bin for the rest, |Δlogit| over the top-K tokens, top-1 exact.
    pub fn add_top(
        &mut self,
        reference: &[super::reference_results::TopRow],
        export: &[f32],
        vocab: usize,
    ) {
        for (r, e) in reference.iter().zip(export.chunks(vocab)) {
            let q = log_softmax(e);
            let (mut k, mut p_top, mut q_top) = (0f64, 0f64, 0f64);
            for (&id, &logit) in r.ids.iter().zip(&r.logits) {
                let (lp, lq) = (f64::from(logit) - r.log_z, q[id as usize]);
                let p = lp.exp();
                k += p * (lp - lq);
                p_top += p;
                q_top += lq.exp();
                let d = (f64::from(logit) - f64::from(e[id as usize])).abs();
                self.max_abs = if d.is_nan() {
                    f64::INFINITY
                } else {
                    self.max_abs.max(d)
                };
                self.sum_abs += if d.is_nan() { f64::INFINITY } else { d };
                self.values += 1;
            }
            let (p_rest, q_rest) = ((1.0 - p_top).max(0.0), (1.0 - q_top).max(0.0));
            if p_rest > 0.0 {
                k += p_rest * (p_rest.ln() - q_rest.ln());
            }
            let k = if k.is_nan() {
                f64::INFINITY
            } else {
                k.max(0.0)
            };
            self.sum_kl += k;
            self.kl_per_position.push(k);
            self.top1_agree += usize::from(r.ids.first().map(|&i| i as usize) == Some(argmax(e)));
            self.positions += 1;
        }
    }

    /// Score next-token NLLs of `tokens` (`logits[t]` predicts `tokens[t + 1]`).
    pub fn add_nll(&mut self, export: &[f32], vocab: usize, tokens: &[u32]) {
        for (t, row) in export
            .chunks(vocab)
            .enumerate()
            .take(tokens.len().saturating_sub(1))
        {
            let lp = log_softmax(row)[tokens[t + 1] as usize];
            self.nll.push(if lp.is_nan() { f64::INFINITY } else { -lp });
        }
    }

    pub fn mean_abs(&self) -> f64 {
        self.sum_abs / self.values.max(1) as f64
    }

    pub fn mean_kl(&self) -> f64 {
        self.sum_kl / self.positions.max(1) as f64
    }

    pub fn top1(&self) -> f64 {
        self.top1_agree as f64 / self.positions.max(1) as f64
    }

    /// `exp(mean NLL)`, `None` without scored tokens.
    pub fn perplexity(&self) -> Option<f64> {
        (!self.nll.is_empty()).then(|| (self.nll.iter().sum::<f64>() / self.nll.len() as f64).exp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_logits_give_zero_kl_and_full_agreement() {
        let mut acc = Accumulator::default();
        let logits = [0.5f32, 2.0, -1.0, 0.0, 3.0, 1.0];
        acc.add(&logits, &logits, 3);
        assert_eq!((acc.positions, acc.max_abs, acc.top1()), (2, 0.0, 1.0));
        assert!(acc.mean_kl().abs() < 1e-12);
    }

    #[test]
    fn kl_matches_the_closed_form_and_nan_fails() {
        let p = log_softmax(&[0.0, 0.0]);
        let q = log_softmax(&[(3f32).ln(), 0.0]);
        // KL([.5,.5] ‖ [.75,.25]) = .5 ln(.5/.75) + .5 ln(.5/.25)
        let expected = 0.5 * (0.5f64 / 0.75).ln() + 0.5 * 2f64.ln();
        assert!((kl(&p, &q) - expected).abs() < 1e-6);
        let mut acc = Accumulator::default();
        acc.add(&[1.0, 0.0], &[f32::NAN, 0.0], 2);
        assert!(acc.mean_kl().is_infinite() && acc.max_abs.is_infinite());
        assert_eq!(acc.top1(), 0.0, "a NaN logit never agrees");
    }

    #[test]
    fn top_k_kl_equals_the_full_kl_when_the_top_k_holds_every_token_and_bounds_it_otherwise() {
        use super::super::reference_results::{TOP_K, TopRow};
        let vocab = 20;
        let r: Vec<f32> = (0..vocab).map(|i| (i as f32 * 0.7).sin() * 3.0).collect();
        let e: Vec<f32> = (0..vocab)
            .map(|i| (i as f32 * 0.7).sin() * 2.5 + 0.1)
            .collect();
        let (mut full, mut top) = (Accumulator::default(), Accumulator::default());
        full.add(&r, &e, vocab);
        top.add_top(&[TopRow::from_logits(&r)], &e, vocab);
        assert!(vocab <= TOP_K);
        assert!((full.mean_kl() - top.mean_kl()).abs() < 1e-12);
        assert_eq!((full.max_abs, full.top1()), (top.max_abs, top.top1()));
        // A vocabulary larger than the top-K: the binned KL is a lower bound.
        let vocab = 200;
        let r: Vec<f32> = (0..vocab).map(|i| (i as f32 * 0.37).sin() * 2.0).collect();
        let e: Vec<f32> = (0..vocab).map(|i| (i as f32 * 0.41).cos() * 2.0).collect();
        let (mut full, mut top) = (Accumulator::default(), Accumulator::default());
        full.add(&r, &e, vocab);
        top.add_top(&[TopRow::from_logits(&r)], &e, vocab);
        assert!(top.mean_kl() <= full.mean_kl() + 1e-12 && top.mean_kl() > 0.0);
        assert_eq!(full.top1(), top.top1());
    }

    #[test]
    fn perplexity_of_a_uniform_model_is_the_vocab_size() {
        let mut acc = Accumulator::default();
        acc.add_nll(&[0.0; 4 * 3], 4, &[1, 2, 3]);
        assert!((acc.perplexity().unwrap() - 4.0).abs() < 1e-9);
    }
}
