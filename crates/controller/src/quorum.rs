//! Parsing of the static controller quorum, `--controller-quorum
//! 1@127.0.0.1:9191,2@127.0.0.1:9192,3@127.0.0.1:9193` (Kafka `controller.quorum.voters`,
//! KIP-595: `{id}@{host}:{port}`).
use crate::error::QuorumError;
use std::collections::BTreeMap;

/// Parses `id@host:port[,id@host:port…]` into voter id → advertised address.
pub fn parse_quorum(voters: &str) -> Result<BTreeMap<u64, String>, QuorumError> {
    let mut parsed = BTreeMap::new();
    for entry in voters.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let invalid = |reason: &str| QuorumError::InvalidVoter { entry: entry.to_string(), reason: reason.to_string() };
        let (id, address) = entry.split_once('@').ok_or_else(|| invalid("missing '@'"))?;
        let id: u64 = id.trim().parse().map_err(|_| invalid("the id is not a non-negative integer"))?;
        let (host, port) = address.rsplit_once(':').ok_or_else(|| invalid("missing ':port'"))?;
        if host.is_empty() {
            return Err(invalid("empty host"));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => return Err(invalid("the port is not a number in 1..=65535")),
        }
        if parsed.insert(id, address.to_string()).is_some() {
            return Err(QuorumError::DuplicateVoter { id });
        }
    }
    if parsed.is_empty() {
        return Err(QuorumError::Empty);
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kafka_controller_quorum_voters() {
        let voters = parse_quorum("1@127.0.0.1:9191, 2@127.0.0.1:9192,3@controller-3:9193").unwrap();
        assert_eq!(voters.len(), 3);
        assert_eq!(voters[&1], "127.0.0.1:9191");
        assert_eq!(voters[&3], "controller-3:9193");
    }

    #[test]
    fn rejects_bad_input_with_a_clear_error() {
        assert_eq!(parse_quorum(""), Err(QuorumError::Empty));
        assert_eq!(parse_quorum("1@a:1,1@b:2"), Err(QuorumError::DuplicateVoter { id: 1 }));
        for bad in ["127.0.0.1:9191", "x@127.0.0.1:9191", "1@127.0.0.1", "1@:9191", "1@h:port", "1@h:0"] {
            let error = parse_quorum(bad).expect_err(bad);
            assert!(matches!(error, QuorumError::InvalidVoter { .. }), "{bad}: {error}");
            assert!(error.to_string().contains("id@host:port"), "{error}");
        }
    }
}
