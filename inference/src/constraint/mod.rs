//! Constrained decoding: what a request's output must be, and the
//! per-sequence guide that keeps every sampled token within it.
//!
//! - [`Grammar`] (`grammar`): JSON objects, JSON schemas, regular
//!   expressions, choices and Lark grammars on llguidance. The guide's mask
//!   for the next token is computed while the forward pass runs (the engine
//!   spawns it beside the pass), and applied to the logits before the draw.
//! - [`PostRules`] (`post`): a social post's rules, judged on drawn tokens.
//!
//! A constraint is compiled when the request is admitted, so a bad schema
//! or an impossible post is the caller's error, before anything is queued.

mod grammar;
mod post;

pub use grammar::Grammar;
pub(crate) use grammar::Grammars;
pub use post::PostRules;

use grammar::GrammarGuide;
use post::{PostGuide, Verdict};

use crate::sampling::{Judgement, Restrict, Sampled, Sampler};
use crate::tokenizer::Tokenizer;

/// What a request's output must be.
#[derive(Clone, Debug, PartialEq)]
pub enum Constraint {
    /// Text matching a grammar.
    Grammar(Grammar),
    /// A post valid for its platform.
    Post(PostRules),
}

/// A constraint that cannot be compiled or satisfied; the message says why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConstraintError(pub String);

/// One sequence's constraint state.
#[derive(Debug)]
pub(crate) enum Guide {
    // Boxed: both are large, and sequences move between queues.
    Grammar(Box<GrammarGuide>),
    Post(Box<PostGuide>),
}

/// How a guided sequence goes on after a forward pass.
pub(crate) enum Pick {
    /// This token joins the sequence.
    Token(Sampled),
    /// Nothing more fits: the output ends here, cut short.
    End,
    /// The constraint failed (a grammar the model cannot continue).
    Fail(String),
}

impl Guide {
    /// Compile `constraint` for one sequence.
    pub(crate) fn new(
        constraint: &Constraint,
        grammars: &Grammars,
        tok: &Tokenizer,
        vocab: usize,
        max_tokens: usize,
    ) -> Result<Self, ConstraintError> {
        Ok(match constraint {
            Constraint::Grammar(g) => Self::Grammar(Box::new(grammars.compile(g, tok, vocab)?)),
            Constraint::Post(rules) => Self::Post(Box::new(PostGuide::new(rules.clone(), max_tokens)?)),
        })
    }

    /// The grammar whose mask should be computed beside this step's
    /// forward pass, if any.
    pub(crate) fn grammar(&mut self) -> Option<&mut GrammarGuide> {
        match self {
            Self::Grammar(g) => Some(g),
            Self::Post(_) => None,
        }
    }

    /// Choose the next token from this step's `logits` and advance past it.
    pub(crate) fn pick(&mut self, sampler: &mut Sampler, logits: &mut [f32], logprobs: Option<usize>, tok: &Tokenizer) -> Pick {
        let pick = self.choose(sampler, logits, logprobs, tok);
        if let Pick::Token(s) = &pick {
            if let Err(e) = self.commit(s.id, tok) {
                return Pick::Fail(e.0);
            }
        }
        pick
    }

    fn choose(&mut self, sampler: &mut Sampler, logits: &mut [f32], logprobs: Option<usize>, tok: &Tokenizer) -> Pick {
        match self {
            Self::Grammar(g) => {
                let mut r = GrammarRestrict { guide: g, error: None };
                match sampler.sample_within(logits, logprobs, &mut r) {
                    Some(s) => Pick::Token(s),
                    None => Pick::Fail(r.error.map_or_else(|| "the grammar allows no token here".into(), |e| e.0)),
                }
            }
            Self::Post(p) => {
                if let Some(id) = p.next_forced() {
                    return Pick::Token(forced(sampler, logits, logprobs, id));
                }
                let mut r = PostRestrict { guide: p, tok };
                if let Some(s) = sampler.sample_within(logits, logprobs, &mut r) {
                    return Pick::Token(s);
                }
                // Out of acceptable tokens (or at a word boundary near the
                // reserve): write the missing required strings, else end.
                match p.force(tok) {
                    Ok(true) => match p.next_forced() {
                        Some(id) => Pick::Token(forced(sampler, logits, logprobs, id)),
                        None => Pick::End,
                    },
                    Ok(false) => Pick::End,
                    Err(e) => Pick::Fail(e.0),
                }
            }
        }
    }

    /// Advance past a token that joins the sequence.
    fn commit(&mut self, id: u32, tok: &Tokenizer) -> Result<(), ConstraintError> {
        match self {
            Self::Grammar(g) => g.commit(id, tok.is_eos(id)),
            Self::Post(p) => {
                p.commit(id, tok);
                Ok(())
            }
        }
    }

    /// Output text on its way to the client (a post holds its last word).
    pub(crate) fn emit(&mut self, text: String) -> String {
        match self {
            Self::Grammar(_) => text,
            Self::Post(p) => p.emit(&text),
        }
    }

    /// What is still held at the end; `cut_short`: the output did not end
    /// by the model's choice.
    pub(crate) fn finish(&mut self, cut_short: bool) -> String {
        match self {
            Self::Grammar(_) => String::new(),
            Self::Post(p) => p.finish(cut_short),
        }
    }
}

/// A forced token, with its logprob under the model if asked.
fn forced(sampler: &mut Sampler, logits: &[f32], logprobs: Option<usize>, id: u32) -> Sampled {
    let logprobs = logprobs.map(|n| sampler.logprobs_of(logits, id, n));
    Sampled { id, logprobs }
}

struct GrammarRestrict<'a> {
    guide: &'a mut GrammarGuide,
    error: Option<ConstraintError>,
}

impl Restrict for GrammarRestrict<'_> {
    fn mask(&mut self, logits: &mut [f32]) {
        if let Err(e) = self.guide.restrict(logits) {
            logits.fill(f32::NEG_INFINITY);
            self.error = Some(e);
        }
    }
}

struct PostRestrict<'a> {
    guide: &'a mut PostGuide,
    tok: &'a Tokenizer,
}

impl Restrict for PostRestrict<'_> {
    fn judges(&self) -> bool {
        true
    }

    fn judge(&mut self, id: u32) -> Judgement {
        match self.guide.verdict(id, self.tok) {
            Verdict::Take => Judgement::Take,
            Verdict::Reject => Judgement::Refuse,
            Verdict::Force => Judgement::Stop,
        }
    }
}
