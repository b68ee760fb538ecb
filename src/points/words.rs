//! The words for where an attempt's packets were lost, shared by the
//! attempt lists and the diagnosis. Point names come from file names and
//! flags: the renderers escape these sentences like any other text.

use crate::record::{Location, LocationKind, PathEvidence};

/// Briefly, for a table cell: `lost between client and router`.
pub fn short(l: &Location) -> String {
    let to = l.to.as_deref().unwrap_or("?");
    match l.kind {
        LocationKind::DroppedAt => format!("dropped at {}", l.from),
        LocationKind::LostBetween => format!("lost between {} and {to}", l.from),
        LocationKind::AnswerLostBetween => format!("answer lost between {} and {to}", l.from),
        LocationKind::ForgedBetween => format!("forged between {} and {to}", l.from),
    }
}

/// SYNs counted at two points: the first point's, and the one the location starts from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SynCounts {
    pub first: u64,
    pub from: u64,
}

impl SynCounts {
    /// The counts in one attempt's evidence.
    pub fn of(path: &PathEvidence, l: &Location) -> SynCounts {
        let syns = |name: &str| path.seen_at.iter().find(|s| s.point == name).map_or(0, |s| u64::from(s.syns));
        SynCounts { first: path.seen_at.first().map_or(0, |s| u64::from(s.syns)), from: syns(&l.from) }
    }
}

/// In a sentence, with what was counted: `first` names the point nearest the client.
pub fn sentence(l: &Location, first: &str, syns: SynCounts) -> String {
    let to = l.to.as_deref().unwrap_or("?");
    let from = &l.from;
    let plural = |n: u64| if n == 1 { "" } else { "s" };
    match l.kind {
        LocationKind::DroppedAt if first != from => format!(
            "the SYNs left {first} ({first}: {} SYN{}) and reached {from} ({from}: {} SYN{}), where nothing \
             answered: the host there dropped them (its own firewall, or a full listen queue), or, if {from} is \
             not the server's host, something beyond it",
            syns.first,
            plural(syns.first),
            syns.from,
            plural(syns.from)
        ),
        LocationKind::DroppedAt => format!(
            "the SYNs reached {from} ({} SYN{}), where nothing answered and no point beyond it was capturing",
            syns.from,
            plural(syns.from)
        ),
        LocationKind::LostBetween => format!(
            "the SYNs left {from} ({from}: {} SYN{}) and never reached {to}: lost between the two points (a \
             firewall dropping them, or a routing fault)",
            syns.from,
            plural(syns.from)
        ),
        LocationKind::AnswerLostBetween => format!(
            "the answer to the SYN left {from} toward the client and never reached {to}: the return path \
             between them drops it"
        ),
        LocationKind::ForgedBetween => format!(
            "the refusal seen at {from} was never seen at {to}: a device between them sent it (a firewall's \
             REJECT), not the server"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drop_on_the_server_host_reads_as_the_issue_puts_it() {
        let l = Location { kind: LocationKind::DroppedAt, from: "server".into(), to: None };
        let text = sentence(&l, "client", SynCounts { first: 4, from: 4 });
        assert!(text.starts_with("the SYNs left client (client: 4 SYNs) and reached server (server: 4 SYNs)"));
        assert_eq!(short(&l), "dropped at server");
    }
}
