//! The mutator: turns a seed into a hostile variant with a few of the edits that break
//! parsers — count and length bombs at any offset (as a big-endian integer or a varint),
//! truncations, bit flips, interesting bytes, duplicated, deleted or spliced ranges.
//! Deterministic for a given RNG, so every finding replays from its seed.
use rand::rngs::StdRng;
use rand::Rng;

/// Integers that sit on the edges parsers get wrong: sign, width, "one more than fits".
const INTERESTING_I32: &[i32] =
    &[0, 1, -1, -2, 0x7f, 0x80, 0xff, 0x7fff, 0xffff, 0x10000, 0x7fff_ffff, i32::MIN, 65_535];

/// Unsigned varints (Kafka's compact lengths) that are huge, overlong or malformed.
const VARINT_BOMBS: &[&[u8]] = &[
    &[0xff, 0xff, 0xff, 0xff, 0x07],
    &[0xff, 0xff, 0xff, 0xff, 0x0f],
    &[0xff, 0xff, 0xff, 0xff, 0x7f],
    &[0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
    &[0xfe, 0xff, 0xff, 0xff, 0x0f],
    &[0x80, 0x80, 0x04],
    &[0x00],
];

/// Applies 1 to 4 random edits to a copy of `seed`, splicing from `other` sometimes.
pub fn mutate(seed: &[u8], other: &[u8], rng: &mut StdRng) -> Vec<u8> {
    let mut data = seed.to_vec();
    let edits = rng.gen_range(1..=4);
    for _ in 0..edits {
        edit(&mut data, other, rng);
    }
    data
}

fn edit(data: &mut Vec<u8>, other: &[u8], rng: &mut StdRng) {
    let len = data.len();
    let at = if len == 0 { 0 } else { rng.gen_range(0..len) };
    match rng.gen_range(0..10) {
        0 if len > 0 => data[at] ^= 1 << rng.gen_range(0..8),
        1 if len > 0 => data[at] = [0x00, 0xff, 0x7f, 0x80, 0x01, 0xfe][rng.gen_range(0..6)],
        2 => {
            let value = INTERESTING_I32[rng.gen_range(0..INTERESTING_I32.len())];
            let bytes: Vec<u8> = match rng.gen_range(0..3) {
                0 => value.to_be_bytes().to_vec(),
                1 => (value as i16).to_be_bytes().to_vec(),
                _ => i64::from(value).to_be_bytes().to_vec(),
            };
            overwrite(data, at, &bytes);
        }
        3 => {
            let bomb = VARINT_BOMBS[rng.gen_range(0..VARINT_BOMBS.len())];
            if rng.gen_bool(0.5) {
                overwrite(data, at, bomb);
            } else {
                data.splice(at..at, bomb.iter().copied());
            }
        }
        4 if len > 0 => data.truncate(rng.gen_range(0..len)),
        5 if len > 0 => {
            let end = (at + rng.gen_range(1..=16)).min(len);
            data.drain(at..end);
        }
        6 if len > 0 => {
            let end = (at + rng.gen_range(1..=64)).min(len);
            let copy = data[at..end].to_vec();
            let to = rng.gen_range(0..=data.len());
            data.splice(to..to, copy);
        }
        7 if !other.is_empty() => {
            // Splice: this input's head, another seed's tail.
            let from = rng.gen_range(0..other.len());
            data.truncate(at);
            data.extend_from_slice(&other[from..]);
        }
        8 => {
            let count = rng.gen_range(1..=8);
            let random: Vec<u8> = (0..count).map(|_| rng.gen()).collect();
            data.splice(at..at, random);
        }
        _ if len >= 2 => {
            // A small signed delta on a big-endian int: off-by-one lengths and counts.
            let width = if len >= 4 && rng.gen_bool(0.5) { 4 } else { 2 };
            let at = at.min(len - width);
            let delta: i32 = rng.gen_range(-3..=3);
            if width == 2 {
                let value = i16::from_be_bytes([data[at], data[at + 1]]).wrapping_add(delta as i16);
                data[at..at + 2].copy_from_slice(&value.to_be_bytes());
            } else {
                let value =
                    i32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]).wrapping_add(delta);
                data[at..at + 4].copy_from_slice(&value.to_be_bytes());
            }
        }
        _ => data.push(rng.gen()),
    }
}

/// Writes `bytes` at `at`, growing `data` if they run past its end.
fn overwrite(data: &mut Vec<u8>, at: usize, bytes: &[u8]) {
    let end = at + bytes.len();
    if end > data.len() {
        data.resize(end, 0);
    }
    data[at..end].copy_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn the_same_seed_gives_the_same_mutants() {
        let seed = b"0123456789abcdef0123456789abcdef";
        let run = |s| {
            let mut rng = StdRng::seed_from_u64(s);
            (0..200).map(|_| mutate(seed, b"other", &mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        assert!(run(7).iter().any(|m| m.len() < seed.len()) && run(7).iter().any(|m| m.len() > seed.len()));
    }
}
