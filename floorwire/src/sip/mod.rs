//! SIP: RFC 3261 on top of `rsipstack::sip` messages.
//!
//! Parsing and serialising messages is rsipstack's (re-exported as [`msg`]); what this
//! module adds is what a telecom element needs around it: strict framing, validation
//! that turns bad input into the right status code, identifiers as newtypes, the
//! transaction layer, dialogs and digest authentication.

pub mod answerer;
pub mod auth;
pub mod b2bua;
pub mod dialog;
pub mod framing;
pub mod ids;
pub mod ingress;
pub mod metrics;
pub mod reply;
pub mod siprec;
pub mod syntax;
pub mod transaction;
pub mod uas;
pub mod udp;

/// The message types: requests, responses, headers, URIs (rsipstack's).
pub use rsipstack::sip as msg;

pub use ids::{Branch, CallId, MessageIds, Tag};
pub use ingress::{Inbound, Rejection, parse_datagram};
