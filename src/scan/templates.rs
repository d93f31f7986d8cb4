//! `grouping.templates`: a Drain-style template miner (He et al. 2017, as drain3 does it)
//! that turns the tokens varying across otherwise identical messages into `<*>`.
//!
//! The miner works on the *normalised* text of a line (after `grouping.rules` and the
//! built-in normalisation, [`crate::scan::fingerprint`]), split on whitespace:
//!
//! - **The tree.** A message goes to a leaf chosen by its key, its token count and its first
//!   `depth - 3` tokens (drain3's `depth` 4, the default, uses the first token only; a
//!   prefix token with a digit, or a `<…>` placeholder of the normaliser, goes to the `<*>`
//!   branch). Messages of different token counts or keys never meet.
//! - **The similarity.** Within a leaf a message is compared with each cluster's template:
//!   the share of positions whose template token is not `<*>` and equals the message's
//!   (drain3's `get_seq_distance` without parameters). A template that already covers the
//!   message (every token not `<*>` equal) takes it first, so a message never leaves the
//!   cluster it once joined when that template generalises. Otherwise the most similar
//!   cluster at or above `grouping.template_similarity` takes it (ties: the oldest), and
//!   every position where the two differ becomes `<*>`. Otherwise the message founds a new
//!   cluster.
//! - **Pinned tokens.** A token holding a PACT key (`PACT:`) is never made `<*>`: messages
//!   differing there are never similar. `svc_v1` and `svc_v2` stay two components.
//!
//! The miner is pure: [`choose`] and [`merge`] decide, the store
//! ([`crate::store::templates`]) keeps the clusters in redb and calls them in the one writer
//! thread, in fingerprint order, which is where the determinism and the identity rule are
//! explained. [`Miner`] is the same algorithm over an in-memory tree, for tests and tools.

use std::collections::BTreeMap;

/// The parameter token.
pub const PARAM: &str = "<*>";

/// The default of `grouping.template_similarity` (drain3's `sim_th`).
pub const DEFAULT_SIMILARITY: f64 = 0.5;

/// The default of `grouping.template_depth` (drain3's `depth`: the token count level, then
/// `depth - 3` prefix tokens, then the leaf).
pub const DEFAULT_DEPTH: usize = 4;

/// The miner's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TemplateSettings {
    /// The least similarity for a message to join a cluster (0..=1).
    pub similarity: f64,
    /// drain3's depth (3..=16).
    pub depth: usize,
}

impl Default for TemplateSettings {
    fn default() -> Self {
        TemplateSettings {
            similarity: DEFAULT_SIMILARITY,
            depth: DEFAULT_DEPTH,
        }
    }
}

/// The tokens of a normalised text.
pub fn tokens(text: &str) -> Vec<&str> {
    text.split_ascii_whitespace().collect()
}

/// Whether `token` holds a PACT key (never made `<*>`).
pub fn is_pinned(token: &str) -> bool {
    token.contains("PACT:")
}

/// The leaf of `tokens` under `depth`: the token count, then the prefix tokens (a token with
/// a digit or a normaliser placeholder goes to `<*>`), separated by `\u{1f}`.
pub fn leaf(tokens: &[&str], depth: usize) -> String {
    let prefix = depth.saturating_sub(3).min(tokens.len().saturating_sub(1));
    let mut out = tokens.len().to_string();
    for t in &tokens[..prefix] {
        out.push('\u{1f}');
        let variable = !is_pinned(t) && (t.bytes().any(|b| b.is_ascii_digit()) || t.contains('<'));
        out.push_str(if variable { PARAM } else { t });
    }
    out
}

/// Whether `template` covers `msg`: same length, every token not `<*>` equal.
pub fn covers<S: AsRef<str>>(template: &[S], msg: &[&str]) -> bool {
    template.len() == msg.len()
        && template
            .iter()
            .zip(msg)
            .all(|(t, m)| t.as_ref() == PARAM || t.as_ref() == *m)
}

/// drain3's similarity of `msg` to `template`: equal tokens not `<*>`, over the length.
/// `None` when the lengths differ or a pinned token differs (never similar).
pub fn similarity<S: AsRef<str>>(template: &[S], msg: &[&str]) -> Option<f64> {
    if template.len() != msg.len() || msg.is_empty() {
        return None;
    }
    let mut same = 0usize;
    for (t, m) in template.iter().zip(msg) {
        let t = t.as_ref();
        if t == *m {
            if t != PARAM {
                same += 1;
            }
        } else if is_pinned(t) || is_pinned(m) {
            return None;
        }
    }
    Some(same as f64 / msg.len() as f64)
}

/// What [`choose`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// The cluster at this index covers the message as it is.
    Covered(usize),
    /// The cluster at this index takes it; its template generalises.
    Similar(usize),
    /// No cluster takes it: a new one.
    New,
}

/// Chooses the cluster of `msg` among a leaf's `templates`, oldest first.
pub fn choose<T: AsRef<[S]>, S: AsRef<str>>(
    templates: &[T],
    msg: &[&str],
    threshold: f64,
) -> Choice {
    if let Some(i) = templates.iter().position(|t| covers(t.as_ref(), msg)) {
        return Choice::Covered(i);
    }
    // The most similar template at or above the threshold, the first of equals: what
    // `similarity` would choose, counting equal tokens and giving up on a template as soon
    // as it can no longer reach the threshold nor beat the best so far (a leaf may hold
    // thousands of templates, every one compared with every new message).
    let n = msg.len();
    if n == 0 {
        return Choice::New;
    }
    let at_threshold = (0..=n)
        .find(|&k| k as f64 / n as f64 >= threshold)
        .unwrap_or(n + 1);
    let msg_pinned: Vec<bool> = msg.iter().map(|m| is_pinned(m)).collect();
    let mut best: Option<(usize, usize)> = None;
    'templates: for (i, t) in templates.iter().enumerate() {
        let t = t.as_ref();
        if t.len() != n {
            continue;
        }
        let need = best.map_or(at_threshold, |(_, b)| (b + 1).max(at_threshold));
        let mut same = 0usize;
        for (j, (t, m)) in t.iter().zip(msg).enumerate() {
            let t = t.as_ref();
            if t == *m {
                if t != PARAM {
                    same += 1;
                }
            } else if msg_pinned[j] || is_pinned(t) {
                continue 'templates;
            }
            if same + (n - j - 1) < need {
                continue 'templates;
            }
        }
        if same >= need {
            best = Some((i, same));
        }
    }
    best.map_or(Choice::New, |(i, _)| Choice::Similar(i))
}

/// Makes every position where `template` and `msg` differ `<*>`; returns whether it
/// changed. Pinned tokens never differ here ([`similarity`] refused them).
pub fn merge(template: &mut [String], msg: &[&str]) -> bool {
    let mut changed = false;
    for (t, m) in template.iter_mut().zip(msg) {
        if t != m && t != PARAM && !is_pinned(t) {
            *t = PARAM.to_string();
            changed = true;
        }
    }
    changed
}

/// A template's text: its tokens separated by one space.
pub fn text<S: AsRef<str>>(template: &[S]) -> String {
    let mut out = String::new();
    for (i, t) in template.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(t.as_ref());
    }
    out
}

/// A leaf's clusters: (id, template tokens), oldest first.
type Leaf = Vec<(u64, Vec<String>)>;

/// The in-memory miner: clusters by (key, leaf), numbered in creation order.
#[derive(Debug, Default)]
pub struct Miner {
    settings: TemplateSettings,
    leaves: BTreeMap<(String, String), Leaf>,
    next: u64,
}

impl Miner {
    /// A miner with `settings`.
    pub fn new(settings: TemplateSettings) -> Miner {
        Miner {
            settings,
            ..Miner::default()
        }
    }

    /// Mines `text` of `key`: the cluster id (creation order) and its template now.
    pub fn add(&mut self, key: &str, text: &str) -> (u64, String) {
        let msg = tokens(text);
        let leaf = (key.to_string(), leaf(&msg, self.settings.depth));
        let clusters = self.leaves.entry(leaf).or_default();
        let templates: Vec<&[String]> = clusters.iter().map(|(_, t)| t.as_slice()).collect();
        let i = match choose(&templates, &msg, self.settings.similarity) {
            Choice::Covered(i) => i,
            Choice::Similar(i) => {
                merge(&mut clusters[i].1, &msg);
                i
            }
            Choice::New => {
                clusters.push((self.next, msg.iter().map(|t| t.to_string()).collect()));
                self.next += 1;
                clusters.len() - 1
            }
        };
        (clusters[i].0, self::text(&clusters[i].1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_varying_word_becomes_a_parameter() {
        let mut m = Miner::new(TemplateSettings::default());
        let (a, _) = m.add("", "user alice logged in");
        let (b, t) = m.add("", "user bob logged in");
        assert_eq!((a, b), (0, 0));
        assert_eq!(t, "user <*> logged in");
        // Covered as it is: same cluster, template unchanged.
        assert_eq!(m.add("", "user carol logged in"), (0, t.clone()));
        assert_eq!(m.add("", "user alice logged in"), (0, t));
    }

    #[test]
    fn different_token_counts_or_keys_never_merge() {
        let mut m = Miner::new(TemplateSettings::default());
        assert_eq!(m.add("", "user alice logged in").0, 0);
        assert_eq!(m.add("", "user alice logged in twice").0, 1);
        assert_eq!(m.add("PACT:a:b", "user alice logged in").0, 2);
        assert_eq!(
            m.add("", "user bob logged in twice").1,
            "user <*> logged in twice"
        );
    }

    #[test]
    fn pact_key_tokens_never_become_parameters() {
        let mut m = Miner::new(TemplateSettings::default());
        let k = "";
        let (a, _) = m.add(k, "ERROR [PACT:svc_v1:get] timeout after <n> ms");
        let (b, t) = m.add(k, "ERROR [PACT:svc_v2:get] timeout after <n> ms");
        assert_ne!(a, b, "two components, two clusters");
        assert_eq!(t, "ERROR [PACT:svc_v2:get] timeout after <n> ms");
        let (c, t) = m.add(k, "ERROR [PACT:svc_v1:get] timeout before <n> ms");
        assert_eq!(c, a);
        assert_eq!(t, "ERROR [PACT:svc_v1:get] timeout <*> <n> ms");
        assert_eq!(
            similarity(&tokens("a PACT:x:y"), &tokens("a PACT:x:z")),
            None
        );
        // Even at a threshold of 0, a differing key is never similar.
        assert_eq!(
            choose(&[tokens("a [PACT:x:y] b")], &tokens("c [PACT:x:z] d"), 0.0),
            Choice::New
        );
    }

    #[test]
    fn the_similarity_threshold_is_respected() {
        // 2 of 5 tokens equal: 0.4.
        let mut m = Miner::new(TemplateSettings::default());
        let (a, _) = m.add("", "disk a full on sda");
        let (b, _) = m.add("", "disk b full at sdb");
        assert_ne!(a, b, "0.4 < 0.5");
        let mut m = Miner::new(TemplateSettings {
            similarity: 0.4,
            depth: DEFAULT_DEPTH,
        });
        let (a, _) = m.add("", "disk a full on sda");
        let (b, t) = m.add("", "disk b full at sdb");
        assert_eq!(a, b, "0.4 >= 0.4");
        assert_eq!(t, "disk <*> full <*> <*>");
        // Exactly at the threshold joins (drain3 compares with >=).
        assert_eq!(
            choose(&[tokens("a b c d")], &tokens("a b x y"), 0.5),
            Choice::Similar(0)
        );
        assert_eq!(
            choose(&[tokens("a b c d")], &tokens("a x y z"), 0.5),
            Choice::New
        );
    }

    #[test]
    fn the_prefix_decides_the_leaf() {
        // depth 4: the first token; a different first token is another leaf.
        assert_eq!(leaf(&tokens("user alice logged in"), 4), "4\u{1f}user");
        assert_eq!(leaf(&tokens("user"), 4), "1");
        assert_eq!(leaf(&tokens("<n> x y"), 5), "3\u{1f}<*>\u{1f}x");
        let mut m = Miner::new(TemplateSettings::default());
        let (a, _) = m.add("", "alice logged in now");
        let (b, _) = m.add("", "bob logged in now");
        assert_ne!(a, b, "drain3 never merges across prefix tokens");
        // A deeper tree: the second token splits too.
        let mut m = Miner::new(TemplateSettings {
            similarity: 0.5,
            depth: 5,
        });
        assert_ne!(m.add("", "user alice in").0, m.add("", "user bob in").0);
    }

    #[test]
    fn a_message_stays_in_the_cluster_that_covers_it() {
        let mut m = Miner::new(TemplateSettings::default());
        m.add("", "a b c d");
        m.add("", "a x y d"); // a <*> <*> d
        // Similarity to `a <*> <*> d` is 0.5 without parameters; covered, it joins as it is.
        assert_eq!(m.add("", "a q r d"), (0, "a <*> <*> d".into()));
    }

    /// `choose` prunes templates that cannot win; it chooses what comparing every
    /// template's whole `similarity` chooses.
    #[test]
    fn choose_agrees_with_the_whole_similarity_of_every_template() {
        fn naive(templates: &[Vec<String>], msg: &[&str], threshold: f64) -> Choice {
            if let Some(i) = templates.iter().position(|t| covers(t, msg)) {
                return Choice::Covered(i);
            }
            let mut best: Option<(usize, f64)> = None;
            for (i, t) in templates.iter().enumerate() {
                if let Some(s) = similarity(t, msg)
                    && s >= threshold
                    && best.is_none_or(|(_, b)| s > b)
                {
                    best = Some((i, s));
                }
            }
            best.map_or(Choice::New, |(i, _)| Choice::Similar(i))
        }
        let vocab = ["a", "b", "c", PARAM, "PACT:x:y", "PACT:x:z"];
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        for _ in 0..5000 {
            let len = 1 + next(5);
            let templates: Vec<Vec<String>> = (0..next(8))
                .map(|_| {
                    let l = if next(4) == 0 { 1 + next(5) } else { len };
                    (0..l)
                        .map(|_| vocab[next(vocab.len())].to_string())
                        .collect()
                })
                .collect();
            let msg: Vec<&str> = (0..len).map(|_| vocab[next(vocab.len() - 1)]).collect();
            for threshold in [0.0, 0.3, 0.4, 0.5, 0.7, 1.0] {
                assert_eq!(
                    choose(&templates, &msg, threshold),
                    naive(&templates, &msg, threshold),
                    "{templates:?} {msg:?} {threshold}"
                );
            }
        }
    }
}
