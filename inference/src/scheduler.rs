//! Which sequences run in the next engine step, and how many tokens each.
//!
//! Plain data, no model: the engine describes each running sequence by how
//! much of its prompt is still to be prefilled, and gets back a plan. Decode
//! steps come first (one token per generating sequence, so streams never
//! stall behind a long prompt); the remaining token budget is shared among
//! the prefilling sequences max-min fairly: each gets an equal share or
//! what it still needs if that is less, the unused part of a share going to
//! the others. So a short prompt is prefilled in its first step beside long
//! ones, instead of waiting for their remaining chunks (arrival order made
//! it wait a minute behind two 6k-token prompts), and no prompt starves.

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
    /// Waiting for another sequence to prefill the same prompt, to copy
    /// it: runs nothing this step.
    pub waiting: bool,
}

/// Tokens each sequence runs this step (same order as the input; 0: skip).
pub fn plan(seqs: &[SeqView], budget: Budget, out: &mut Vec<usize>) {
    out.clear();
    out.resize(seqs.len(), 0);
    let mut left = budget.max_batch_tokens;
    for (n, s) in out.iter_mut().zip(seqs) {
        if s.prompt_left == 0 && !s.waiting && left > 0 {
            *n = 1;
            left -= 1;
        }
    }
    // Water-filling: smallest need first, each taking at most an equal
    // share of what is left (ties keep arrival order).
    let mut prefilling: Vec<usize> = (0..seqs.len()).filter(|&i| seqs[i].prompt_left > 0 && !seqs[i].waiting).collect();
    prefilling.sort_by_key(|&i| seqs[i].prompt_left);
    let count = prefilling.len();
    for (k, i) in prefilling.into_iter().enumerate() {
        if left == 0 {
            break;
        }
        let share = left.div_ceil(count - k);
        let n = seqs[i].prompt_left.min(budget.prefill_chunk).min(share);
        out[i] = n;
        left -= n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Budget = Budget { max_batch_tokens: 100, prefill_chunk: 64 };

    fn run(prompts: &[usize], budget: Budget) -> Vec<usize> {
        let seqs: Vec<SeqView> = prompts.iter().map(|&p| SeqView { prompt_left: p, waiting: false }).collect();
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
        assert_eq!(run(&[0, 0, 200, 200], Budget { max_batch_tokens: 10, prefill_chunk: 64 }), vec![1, 1, 4, 4]);
    }

    /// Two long prompts arrived first: the short one is still prefilled
    /// whole in this step, and they share the rest.
    #[test]
    fn a_short_prompt_is_not_queued_behind_long_ones() {
        let defaults = Budget { max_batch_tokens: 512, prefill_chunk: 256 };
        assert_eq!(run(&[6500, 6500, 20], defaults), vec![246, 246, 20]);
        assert_eq!(run(&[6500, 6500, 20, 0], defaults), vec![246, 245, 20, 1]);
    }

    /// Every prefilling sequence progresses, however many there are.
    #[test]
    fn no_prefill_starves() {
        let plan = run(&[1000; 40], Budget { max_batch_tokens: 512, prefill_chunk: 256 });
        assert!(plan.iter().all(|&n| n >= 12), "{plan:?}");
        assert_eq!(plan.iter().sum::<usize>(), 512);
    }

    #[test]
    fn decode_beyond_budget_waits() {
        assert_eq!(run(&[0, 0, 0], Budget { max_batch_tokens: 2, prefill_chunk: 8 }), vec![1, 1, 0]);
    }
}
