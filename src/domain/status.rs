//! Canonical statuses and their rank (SPEC §3).

use std::fmt;
use std::str::FromStr;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Authorized,
    Succeeded,
    Failed,
    Canceled,
    Expired,
    PartiallyRefunded,
    Refunded,
    ChargedBack,
}

impl Status {
    pub const ALL: [Status; 9] = [
        Status::Pending,
        Status::Authorized,
        Status::Succeeded,
        Status::Failed,
        Status::Canceled,
        Status::Expired,
        Status::PartiallyRefunded,
        Status::Refunded,
        Status::ChargedBack,
    ];

    /// Rank from SPEC §3: a payment's rank never falls, except for a new
    /// attempt after a failed/canceled/expired one.
    pub fn rank(self) -> u8 {
        match self {
            Status::Pending => 1,
            Status::Authorized => 2,
            Status::Succeeded | Status::Failed | Status::Canceled | Status::Expired => 3,
            Status::PartiallyRefunded => 4,
            Status::Refunded => 5,
            Status::ChargedBack => 6,
        }
    }

    /// Outcomes after which a different authorization/charge may start a new attempt.
    pub fn is_unsuccessful_end(self) -> bool {
        matches!(self, Status::Failed | Status::Canceled | Status::Expired)
    }

    /// A status the 3DS return may stop waiting at.
    pub fn is_final(self) -> bool {
        self != Status::Pending
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Authorized => "authorized",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Canceled => "canceled",
            Status::Expired => "expired",
            Status::PartiallyRefunded => "partially_refunded",
            Status::Refunded => "refunded",
            Status::ChargedBack => "charged_back",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown canonical status {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for Status {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_status_through_its_name() {
        for st in Status::ALL {
            assert_eq!(st.as_str().parse::<Status>().unwrap(), st);
        }
        assert!("Succeeded".parse::<Status>().is_err());
    }

    #[test]
    fn ranks_follow_the_spec_table() {
        let ranks: Vec<u8> = Status::ALL.iter().map(|s| s.rank()).collect();
        assert_eq!(ranks, vec![1, 2, 3, 3, 3, 3, 4, 5, 6]);
    }
}
