//! Reads the partitions out of a consumer-protocol assignment (Kafka
//! `ConsumerProtocolAssignment`: version int16, then `[topic string, [partition int32]]`,
//! then user data, for every version so far), for `insync group describe`. The coordinator
//! itself never looks inside assignments: the bytes are the client's. Hostile bytes give
//! None, never a panic, and nothing is allocated beyond what is present.

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn i16(&mut self) -> Option<i16> {
        self.take::<2>().map(i16::from_be_bytes)
    }

    fn i32(&mut self) -> Option<i32> {
        self.take::<4>().map(i32::from_be_bytes)
    }

    /// A count of elements at least `min_size` bytes each: never more than could be present.
    fn count(&mut self, min_size: usize) -> Option<usize> {
        let n = usize::try_from(self.i32()?).ok()?;
        (n.checked_mul(min_size)? <= self.0.len()).then_some(n)
    }

    fn string(&mut self) -> Option<String> {
        let len = usize::try_from(self.i16()?).ok()?;
        let bytes = self.0.get(..len)?;
        self.0 = &self.0[len..];
        String::from_utf8(bytes.to_vec()).ok()
    }
}

/// The (topic, partitions) of an assignment, or None if the bytes are not one.
pub fn assigned_partitions(assignment: &[u8]) -> Option<Vec<(String, Vec<i32>)>> {
    let mut reader = Reader(assignment);
    if reader.i16()? < 0 {
        return None;
    }
    let topics = reader.count(6)?;
    let mut out = Vec::with_capacity(topics);
    for _ in 0..topics {
        let topic = reader.string()?;
        let partitions = reader.count(4)?;
        let mut list = Vec::with_capacity(partitions);
        for _ in 0..partitions {
            list.push(reader.i32()?);
        }
        out.push((topic, list));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(topics: &[(&str, &[i32])]) -> Vec<u8> {
        let mut b = 1i16.to_be_bytes().to_vec();
        b.extend((topics.len() as i32).to_be_bytes());
        for (topic, partitions) in topics {
            b.extend((topic.len() as i16).to_be_bytes());
            b.extend(topic.as_bytes());
            b.extend((partitions.len() as i32).to_be_bytes());
            for p in *partitions {
                b.extend(p.to_be_bytes());
            }
        }
        b.extend((-1i32).to_be_bytes()); // null user data
        b
    }

    #[test]
    fn decodes_assignments_and_refuses_garbage() {
        let bytes = encode(&[("orders", &[0, 2]), ("audit", &[])]);
        assert_eq!(
            assigned_partitions(&bytes),
            Some(vec![("orders".to_string(), vec![0, 2]), ("audit".to_string(), vec![])])
        );
        assert_eq!(assigned_partitions(&[]), None);
        for cut in 0..bytes.len() - 4 {
            // Every truncation either fails or decodes a prefix: never panics.
            let _ = assigned_partitions(&bytes[..cut]);
        }
        let huge = [0, 1, 0x7f, 0xff, 0xff, 0xff];
        assert_eq!(assigned_partitions(&huge), None, "a count beyond the bytes present");
    }
}
