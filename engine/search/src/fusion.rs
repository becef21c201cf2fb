//! Merging the ranked lists of the text and vector sides into one.

use std::collections::HashMap;

use adiuva_model::RecordId;

/// Reciprocal rank fusion's usual constant (Cormack et al. 2009): damps the weight of the very top.
pub const RRF_K: f32 = 60.0;
/// The default hybrid's constant and the share of its words' list when many records share the
/// query's words (the meaning's is the rest), chosen on the tuning half of the manual-page
/// questions (`tests/quality.rs`) and checked on the held-out half (`BENCHMARKS.md`). Equal
/// shares let BM25 rank first whatever shares a common word with a question, and it ranks
/// paraphrased questions far worse than meaning does: words then mostly decide between
/// records both sides found.
pub const HYBRID_K: f32 = 30.0;
pub const HYBRID_TEXT_WEIGHT: f32 = 0.1;

/// The default hybrid: reciprocal rank fusion of the words' and the meaning's lists, each read
/// `depth` deep, constant [`HYBRID_K`]. When the words fill their list (many records share
/// them, as with the common words of a question) they weigh [`HYBRID_TEXT_WEIGHT`]; when
/// fewer records than that contain them (a rare word, a name, a code) they are selective, and
/// weigh as much as meaning, which scores such a word poorly.
pub fn hybrid(text: &[RecordId], vector: &[RecordId], depth: usize) -> Vec<(RecordId, f32)> {
    let text_weight = if text.len() < depth { 0.5 } else { HYBRID_TEXT_WEIGHT };
    reciprocal_rank(&[(text, text_weight), (vector, 1.0 - text_weight)], HYBRID_K)
}

/// Reciprocal rank fusion: each record scores Σ weight / (k + rank) over the lists it is in
/// (ranks from 1). Ties keep the order of first appearance, text first.
pub fn reciprocal_rank(lists: &[(&[RecordId], f32)], k: f32) -> Vec<(RecordId, f32)> {
    let mut scores: HashMap<RecordId, (f32, usize)> = HashMap::new();
    let mut order = 0;
    for (list, weight) in lists {
        for (rank, record) in list.iter().enumerate() {
            let entry = scores.entry(*record).or_insert_with(|| {
                order += 1;
                (0.0, order)
            });
            entry.0 += weight / (k + rank as f32 + 1.0);
        }
    }
    sorted(scores)
}

/// A weighted sum of each side's scores, each scaled to 0..1 over its own list (min-max):
/// `text_weight` for words, the rest for meaning. A record absent from a list scores 0 there.
pub fn weighted(text: &[(RecordId, f32)], vector: &[(RecordId, f32)], text_weight: f32) -> Vec<(RecordId, f32)> {
    let mut scores: HashMap<RecordId, (f32, usize)> = HashMap::new();
    let mut order = 0;
    for (list, weight) in [(text, text_weight), (vector, 1.0 - text_weight)] {
        let max = list.iter().map(|(_, s)| *s).fold(f32::MIN, f32::max);
        let min = list.iter().map(|(_, s)| *s).fold(f32::MAX, f32::min);
        let span = if max > min { max - min } else { 1.0 };
        for (record, score) in list {
            let entry = scores.entry(*record).or_insert_with(|| {
                order += 1;
                (0.0, order)
            });
            // A one-entry list (span 0) counts its entry fully.
            let scaled = if max > min { (score - min) / span } else { 1.0 };
            entry.0 += weight * scaled;
        }
    }
    sorted(scores)
}

fn sorted(scores: HashMap<RecordId, (f32, usize)>) -> Vec<(RecordId, f32)> {
    let mut out: Vec<(RecordId, f32, usize)> = scores.into_iter().map(|(r, (s, o))| (r, s, o)).collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.2.cmp(&b.2)));
    out.into_iter().map(|(r, s, _)| (r, s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_in_both_lists_beats_one_in_either() {
        let [a, b, c] = [RecordId::new(), RecordId::new(), RecordId::new()];
        let fused = reciprocal_rank(&[(&[a, b], 1.0), (&[c, b], 1.0)], RRF_K);
        assert_eq!(fused[0].0, b);
        assert_eq!(fused.iter().map(|f| f.0).collect::<Vec<_>>(), vec![b, a, c]);
        // Words that fill their list lean on meaning: a record only they found comes after one
        // only meaning found, and one both found leads; selective words weigh as much as meaning.
        let order = |fused: Vec<(RecordId, f32)>| fused.into_iter().map(|f| f.0).collect::<Vec<_>>();
        assert_eq!(order(hybrid(&[a, b], &[c, b], 2)), vec![b, c, a]);
        assert_eq!(order(hybrid(&[a, b], &[c, b], 3)), vec![b, a, c]);
        let fused = weighted(&[(a, 10.0), (b, 5.0)], &[(c, 0.9), (b, 0.8)], 0.5);
        assert_eq!(fused.len(), 3);
        assert_eq!(fused[0].0, a);
    }
}
