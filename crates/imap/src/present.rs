//! The IMAP side's shown message: the one presentation of the reading sides
//! ([`::present::present`], shared with POP3) and the header sections of it already answered,
//! since folder listings ask for the same ones again and again.

use std::time::SystemTime;

use certstore::CertStore;
use smime::Identity;

pub use ::present::{block_remote_references, needs_presentation, STATUS_FIELD};

/// What the client is shown for one message, with the IMAP answers already given from it.
#[derive(Debug, Clone)]
pub struct Presentation {
    /// The shown message, its status and what its signature taught.
    pub shown: ::present::Presentation,
    /// Header sections of the message already answered.
    pub sections: crate::fetch::SectionMemo,
}

impl std::ops::Deref for Presentation {
    type Target = ::present::Presentation;

    fn deref(&self) -> &Self::Target {
        &self.shown
    }
}

impl From<::present::Presentation> for Presentation {
    fn from(shown: ::present::Presentation) -> Self {
        Presentation {
            shown,
            sections: Default::default(),
        }
    }
}

impl Presentation {
    /// The bytes this presentation holds in memory (what the cache counts): the shown message
    /// and what it taught, and the most its memo may keep.
    pub fn footprint(&self) -> usize {
        self.shown.footprint() + crate::fetch::MEMO_BYTES
    }
}

/// Opens a stored message for display ([`::present::present`]).
pub fn present(
    stored: &[u8],
    keys: &[&Identity],
    store: &CertStore,
    at: SystemTime,
) -> Presentation {
    ::present::present(stored, keys, store, at).into()
}

/// Like [`present`], taking the stored message, with the daemon's locked certificate store
/// ([`::present::present_shared`]).
pub fn present_shared(
    stored: Vec<u8>,
    keys: &[&Identity],
    store: &std::sync::RwLock<CertStore>,
    at: SystemTime,
) -> Presentation {
    ::present::present_shared(stored, keys, store, at).into()
}
