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

/// Chooses the cluster of `msg` among a leaf's `templates`, oldest first: a template that
/// covers it, else the most similar at or above `threshold` (the oldest of equals), else
/// none. (Indexes them first: a leaf kept between messages is a [`LeafIndex`].)
pub fn choose<T: AsRef<[S]>, S: AsRef<str>>(
    templates: &[T],
    msg: &[&str],
    threshold: f64,
) -> Choice {
    let mut leaf = LeafIndex::new();
    for t in templates {
        leaf.push(t.as_ref());
    }
    leaf.choose(msg, threshold)
}

/// A token id of a [`LeafIndex`]: `<*>` is 0; a message token the leaf never held is
/// [`UNKNOWN`].
type TokenId = u32;

/// The id of a message token no template of the leaf holds.
const UNKNOWN: TokenId = TokenId::MAX;

/// A leaf's templates, indexed so that a message is compared only with the templates that
/// could take it: [`LeafIndex::choose`] chooses what comparing the message with every
/// template would.
///
/// - A template *covers* a message only if the message has the template's token at each
///   position where it is not `<*>`, in particular at one of them, its *anchor* (the one
///   whose (position, token) fewest templates held when it was chosen). Covering candidates
///   are the templates anchored at one of the message's (position, token) pairs, and the
///   templates of `<*>` only.
/// - A template reaching the similarity threshold shares at least `k` tokens with the message
///   (`k` ≥ 1), so it shares one among any `n - k + 1` positions: the candidates are the
///   templates holding the message's token at the `n - k + 1` positions fewest templates
///   share (a position where every template has `ERROR` is never looked at).
///
/// Tokens are interned per leaf, so a comparison is of integers. A leaf of 10,000 clusters of
/// distinct messages compared each new message with every one of them (0.17 ms a message).
#[derive(Debug, Default)]
pub struct LeafIndex {
    ids: std::collections::HashMap<Box<str>, TokenId>,
    /// By token id: whether it holds a PACT key.
    pinned: Vec<bool>,
    /// By token id.
    words: Vec<Box<str>>,
    templates: Vec<Vec<TokenId>>,
    /// (position, token) → the templates holding it there, ascending (never `<*>`).
    post: std::collections::HashMap<(u32, TokenId), Vec<u32>>,
    /// (position, token) → the templates anchored there, ascending.
    anchored: std::collections::HashMap<(u32, TokenId), Vec<u32>>,
    /// By template: its anchor (`None`: `<*>` only).
    anchor: Vec<Option<(u32, TokenId)>>,
    /// The templates of `<*>` only, ascending.
    unanchored: Vec<u32>,
}

impl LeafIndex {
    /// An empty leaf.
    pub fn new() -> LeafIndex {
        let mut l = LeafIndex::default();
        l.intern(PARAM);
        l
    }

    fn intern(&mut self, token: &str) -> TokenId {
        if let Some(&id) = self.ids.get(token) {
            return id;
        }
        let id = self.words.len() as TokenId;
        self.ids.insert(token.into(), id);
        self.words.push(token.into());
        self.pinned.push(is_pinned(token));
        id
    }

    /// Adds a template (the newest); returns its index.
    pub fn push<S: AsRef<str>>(&mut self, template: &[S]) -> usize {
        let i = self.templates.len() as u32;
        let t: Vec<TokenId> = template.iter().map(|s| self.intern(s.as_ref())).collect();
        for (j, &id) in t.iter().enumerate() {
            if id != 0 {
                self.post.entry((j as u32, id)).or_default().push(i);
            }
        }
        self.templates.push(t);
        self.anchor.push(None);
        self.set_anchor(i);
        i as usize
    }

    /// Anchors template `i` at its least shared (position, token), or with the templates of
    /// `<*>` only.
    fn set_anchor(&mut self, i: u32) {
        let t = &self.templates[i as usize];
        let best = t
            .iter()
            .enumerate()
            .filter(|&(_, &id)| id != 0)
            .map(|(j, &id)| (j as u32, id))
            .min_by_key(|k| self.post.get(k).map_or(0, Vec::len));
        self.anchor[i as usize] = best;
        let list = match best {
            Some(k) => self.anchored.entry(k).or_default(),
            None => &mut self.unanchored,
        };
        // Indices are pushed in order, but a re-anchored template may be older.
        let at = list.partition_point(|&x| x < i);
        list.insert(at, i);
    }

    /// Template `i`'s tokens.
    pub fn template(&self, i: usize) -> Vec<&str> {
        self.templates[i]
            .iter()
            .map(|&id| &*self.words[id as usize])
            .collect()
    }

    /// Template `i`'s text: its tokens separated by one space.
    pub fn text(&self, i: usize) -> String {
        text(&self.template(i))
    }

    /// Makes every position where template `i` and `msg` differ `<*>` (as [`merge`] does);
    /// returns whether it changed.
    pub fn merge(&mut self, i: usize, msg: &[&str]) -> bool {
        let mut changed = Vec::new();
        for (j, (&t, m)) in self.templates[i].iter().zip(msg).enumerate() {
            if t != 0 && &*self.words[t as usize] != *m && !self.pinned[t as usize] {
                changed.push((j, t));
            }
        }
        if changed.is_empty() {
            return false;
        }
        let ix = i as u32;
        let remove = |list: &mut Vec<u32>| {
            if let Ok(at) = list.binary_search(&ix) {
                list.remove(at);
            }
        };
        for &(j, t) in &changed {
            if let Some(list) = self.post.get_mut(&(j as u32, t)) {
                remove(list);
            }
            self.templates[i][j] = 0;
        }
        match self.anchor[i] {
            Some(k) => {
                if let Some(list) = self.anchored.get_mut(&k) {
                    remove(list);
                }
            }
            None => remove(&mut self.unanchored),
        }
        self.set_anchor(ix);
        true
    }

    /// Chooses the cluster of `msg` among the leaf's templates, oldest first: one that
    /// covers it, else the most similar at or above `threshold` (the oldest of equals).
    pub fn choose(&self, msg: &[&str], threshold: f64) -> Choice {
        let n = msg.len();
        let ids: Vec<TokenId> = msg
            .iter()
            .map(|m| self.ids.get(*m).copied().unwrap_or(UNKNOWN))
            .collect();
        let msg_pinned: Vec<bool> = msg.iter().map(|m| is_pinned(m)).collect();
        // Covering: the anchored candidates.
        let mut candidates: Vec<u32> = self.unanchored.clone();
        for (j, &id) in ids.iter().enumerate() {
            if id != UNKNOWN
                && let Some(list) = self.anchored.get(&(j as u32, id))
            {
                candidates.extend_from_slice(list);
            }
        }
        // The oldest covering one (candidates come in no order; sorting them cost more than
        // comparing them).
        let covered = candidates
            .iter()
            .copied()
            .filter(|&i| {
                let t = &self.templates[i as usize];
                t.len() == n && t.iter().zip(&ids).all(|(&t, &m)| t == 0 || t == m)
            })
            .min();
        if let Some(i) = covered {
            return Choice::Covered(i as usize);
        }
        if n == 0 {
            return Choice::New;
        }
        // The least number of equal tokens at the threshold.
        let at_threshold = (0..=n)
            .find(|&k| k as f64 / n as f64 >= threshold)
            .unwrap_or(n + 1);
        if at_threshold > n {
            return Choice::New;
        }
        candidates.clear();
        if at_threshold == 0 {
            // Any template of the length qualifies.
            candidates.extend(0..self.templates.len() as u32);
        } else {
            let mut lists: Vec<&[u32]> = ids
                .iter()
                .enumerate()
                .map(|(j, &id)| {
                    self.post
                        .get(&(j as u32, id))
                        .map_or(&[][..], Vec::as_slice)
                })
                .collect();
            lists.sort_unstable_by_key(|l| l.len());
            for l in &lists[..n - at_threshold + 1] {
                candidates.extend_from_slice(l);
            }
        }
        // The most similar, the oldest of equals, whatever the order candidates come in (one
        // may come twice): an older template than the best so far needs as many equal
        // tokens to win, a newer one more. A template gives up as soon as it can no longer
        // reach that; a differing pinned token is never similar.
        let mut best: Option<(usize, usize)> = None;
        'templates: for &i in &candidates {
            let i = i as usize;
            let t = &self.templates[i];
            if t.len() != n {
                continue;
            }
            let need = match best {
                None => at_threshold,
                Some((bi, b)) if i < bi => b.max(at_threshold),
                Some((bi, _)) if i == bi => continue,
                Some((_, b)) => (b + 1).max(at_threshold),
            };
            let mut same = 0usize;
            for (j, (&t, &m)) in t.iter().zip(&ids).enumerate() {
                if t == m {
                    if t != 0 {
                        same += 1;
                    }
                } else if msg_pinned[j] || self.pinned[t as usize] {
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

/// The in-memory miner: clusters by (key, leaf), numbered in creation order.
#[derive(Debug, Default)]
pub struct Miner {
    settings: TemplateSettings,
    /// By (key, leaf): the cluster ids by index, and the templates.
    leaves: BTreeMap<(String, String), (Vec<u64>, LeafIndex)>,
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
        let (ids, index) = self
            .leaves
            .entry(leaf)
            .or_insert_with(|| (Vec::new(), LeafIndex::new()));
        let i = match index.choose(&msg, self.settings.similarity) {
            Choice::Covered(i) => i,
            Choice::Similar(i) => {
                index.merge(i, &msg);
                i
            }
            Choice::New => {
                ids.push(self.next);
                self.next += 1;
                index.push(&msg)
            }
        };
        (ids[i], index.text(i))
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

    /// A deterministic pseudo-random index below `n`, by xorshift from `state`.
    fn xorshift(mut state: u64) -> impl FnMut(usize) -> usize {
        move |n| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        }
    }

    /// The choice by the definition: every template's whole `similarity`.
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

    /// The indexed leaf, kept across messages, chooses as the definition does and
    /// generalises as `merge` does, whatever the templates and the messages.
    #[test]
    fn a_leaf_index_chooses_as_choose_does() {
        let vocab = ["a", "b", "c", "d", PARAM, "PACT:x:y", "PACT:x:z"];
        let mut next = xorshift(0x2545_F491_4F6C_DD1Du64);
        for round in 0..400 {
            let threshold = [0.0, 0.3, 0.4, 0.5, 0.7, 1.0][round % 6];
            let len = 1 + next(6);
            let mut plain: Vec<Vec<String>> = Vec::new();
            let mut index = LeafIndex::new();
            for _ in 0..60 {
                // Mostly the leaf's length, as a leaf holds; sometimes another.
                let l = if next(8) == 0 { 1 + next(6) } else { len };
                let msg: Vec<&str> = (0..l).map(|_| vocab[next(vocab.len())]).collect();
                let want = naive(&plain, &msg, threshold);
                assert_eq!(index.choose(&msg, threshold), want, "{plain:?} {msg:?}");
                match want {
                    Choice::Covered(_) => {}
                    Choice::Similar(i) => {
                        assert_eq!(index.merge(i, &msg), merge(&mut plain[i], &msg));
                    }
                    Choice::New => {
                        assert_eq!(index.push(&msg), plain.len());
                        plain.push(msg.iter().map(|t| t.to_string()).collect());
                    }
                }
                for (i, t) in plain.iter().enumerate() {
                    assert_eq!(index.template(i), *t);
                }
            }
        }
    }

    /// `choose` (an index, pruning templates that cannot win) chooses what comparing every
    /// template's whole `similarity` chooses, on leaves of mixed lengths.
    #[test]
    fn choose_agrees_with_the_whole_similarity_of_every_template() {
        let vocab = ["a", "b", "c", PARAM, "PACT:x:y", "PACT:x:z"];
        let mut next = xorshift(0x9E37_79B9_7F4A_7C15u64);
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
