//! [`Priority`]: which requests the limiter refuses first.

/// How much a request matters when there is not room for all of them, lowest first. The
/// HTTP layer (`src/http/shed.rs`) decides each request's priority from who sends it and what
/// it asks for; here it is only an order and a share of the limit.
///
/// The order follows what a failure costs. A refused anonymous list costs least: the most
/// expensive reads (a feed merges every shard) from the callers we know least, which a client
/// or a CDN can retry or serve stale. Refused writes and logins cost most: a user sees their
/// action fail, and a write is not always safe to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Lists and feeds read without credentials.
    AnonymousLists,
    /// Single reads without credentials, and every read by a free-tier user.
    Reads,
    /// Reads by paying customers: the pro tier and API keys.
    PaidReads,
    /// Logins, registrations and writes.
    Critical,
}

impl Priority {
    /// Lowest first.
    /// The first shed, and the only one that never queues by default.
    pub const LOWEST: Priority = Priority::AnonymousLists;

    pub const ALL: [Priority; 4] = [
        Self::AnonymousLists,
        Self::Reads,
        Self::PaidReads,
        Self::Critical,
    ];

    /// The `priority` label of the shedding metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AnonymousLists => "anonymous_lists",
            Self::Reads => "reads",
            Self::PaidReads => "paid_reads",
            Self::Critical => "critical",
        }
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }

    /// The part of the limit this priority may fill. Waiting in a priority queue alone would
    /// still let anonymous lists take every slot whenever no better request happens to be
    /// waiting, and the next login would queue behind them; reserving the top of the limit
    /// for higher priorities means a login usually finds a free slot at once (Stripe's
    /// shedders keep capacity back for critical requests the same way). The cost: under
    /// overload, anonymous lists never use more than half the limit even when nothing else
    /// wants the rest.
    fn share(self) -> f64 {
        match self {
            Self::AnonymousLists => 0.5,
            Self::Reads => 0.75,
            Self::PaidReads => 0.9,
            Self::Critical => 1.0,
        }
    }

    /// How many requests may be in flight (of any priority) for one of this priority to be
    /// admitted, given `limit`: at least one, so a tiny limit still serves everyone.
    pub(super) fn room(self, limit: usize) -> usize {
        ((limit as f64 * self.share()).floor() as usize).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_priority_may_fill_more_of_the_limit_than_the_one_below() {
        assert_eq!(
            Priority::ALL.map(|p| p.room(20)),
            [10, 15, 18, 20],
            "shares of a limit of 20"
        );
        assert_eq!(Priority::ALL.map(|p| p.room(1)), [1, 1, 1, 1]);
        for limit in 1..200 {
            let rooms = Priority::ALL.map(|p| p.room(limit));
            assert!(rooms.windows(2).all(|w| w[0] <= w[1]), "{limit}: {rooms:?}");
            assert_eq!(rooms[3], limit);
        }
    }
}
