//! Transaction states and timers, named as RFC 3261 §17 (and RFC 6026) name them.

/// Client transaction states (§17.1.1 INVITE, §17.1.2 non-INVITE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// INVITE sent, nothing heard (Timers A, B).
    Calling,
    /// Non-INVITE sent, nothing heard (Timers E, F).
    Trying,
    /// A provisional response arrived.
    Proceeding,
    /// A 2xx arrived to the INVITE (RFC 6026 §7.2, Timer M).
    Accepted,
    /// A final (non-2xx for INVITE) response arrived (Timers D, K).
    Completed,
}

/// Server transaction states (§17.2.1 INVITE, §17.2.2 non-INVITE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Non-INVITE received, no response yet.
    Trying,
    /// A provisional response was sent (INVITE starts here).
    Proceeding,
    /// 2xx sent to an INVITE (RFC 6026 §7.1, Timer L).
    Accepted,
    /// Final response sent (Timers G, H for INVITE; J for non-INVITE).
    Completed,
    /// ACK received for a non-2xx final (Timer I).
    Confirmed,
}

/// The timers of §17 (Table 4) and RFC 6026 (L, M).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    /// INVITE request retransmit.
    A,
    /// INVITE transaction timeout; also the §9.1 guard after a CANCEL.
    B,
    /// A client INVITE in Proceeding that never gets a final response (§16.6 step 11's
    /// Timer C, used here as the UAC's bound too).
    C,
    /// Wait for response retransmits (client INVITE, Completed).
    D,
    /// Non-INVITE request retransmit.
    E,
    /// Non-INVITE transaction timeout.
    F,
    /// INVITE final-response retransmit (also the UAS 2xx retransmit).
    G,
    /// Wait for ACK receipt.
    H,
    /// Wait for ACK retransmits.
    I,
    /// Wait for non-INVITE request retransmits.
    J,
    /// Wait for non-INVITE response retransmits.
    K,
    /// Server INVITE Accepted: absorb INVITE retransmits.
    L,
    /// Client INVITE Accepted: pass 2xx retransmits to the TU.
    M,
}

impl Timer {
    /// Number of timers, for per-transaction deadline arrays.
    pub const COUNT: usize = 13;
}
