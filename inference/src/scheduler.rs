//! Which sequences run in the next engine step, and how many tokens each.
//!
//! Plain data, no model: the engine describes each running sequence by how
//! much of its prompt is still to be prefilled, and gets back a plan. Decode
//! steps come first (one token per generating sequence, so streams never
//! stall behind a long prompt); the remaining token budget goes to prefill
//! chunks in arrival order.

/// Step limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Most tokens one forward pass may process.
    pub max_batch_tokens: usize,
    /// Most prompt tokens one sequence prefills per step.
    pub prefill_chunk: usize,
}

/// A running sequence as the planner sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqView {
    /// Prompt tokens not yet in the cache (0: the sequence is generating).
    pub prompt_left: usize,
}

/// Tokens each sequence runs this step (same order as the input; 0: skip).
pub fn plan(seqs: &[SeqView], budget: Budget, out: &mut Vec<usize>) {
    out.clear();
    out.resize(seqs.len(), 0);
    let mut left = budget.max_batch_tokens;
    for (n, s) in out.iter_mut().zip(seqs) {
        if s.prompt_left == 0 && left > 0 {
            *n = 1;
            left -= 1;
        }
    }
    for (n, s) in out.iter_mut().zip(seqs) {
        if s.prompt_left > 0 && left > 0 {
            *n = s.prompt_left.min(budget.prefill_chunk).min(left);
            left -= *n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Budget = Budget { max_batch_tokens: 100, prefill_chunk: 64 };

    fn run(prompts: &[usize], budget: Budget) -> Vec<usize> {
        let seqs: Vec<SeqView> = prompts.iter().map(|&p| SeqView { prompt_left: p }).collect();
        let mut out = Vec::new();
        plan(&seqs, budget, &mut out);
        out
    }

    #[test]
    fn decodes_first_then_prefill_chunks_in_order() {
        assert_eq!(run(&[500, 0, 30, 0], B), vec![64, 1, 30, 1]);
    }

    #[test]
    fn budget_limits_prefill_but_never_starves_decode() {
        assert_eq!(run(&[0, 0, 200, 200], Budget { max_batch_tokens: 10, prefill_chunk: 64 }), vec![1, 1, 8, 0]);
    }

    #[test]
    fn decode_beyond_budget_waits() {
        assert_eq!(run(&[0, 0, 0], Budget { max_batch_tokens: 2, prefill_chunk: 8 }), vec![1, 1, 0]);
    }
}
