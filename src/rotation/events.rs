//! What the rotator did, logged once each change is published.

use std::time::SystemTime;

use crate::clock::unix_seconds;
use crate::keys::Kid;

/// A lifecycle event, logged once the change is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Event {
    Published {
        kid: Kid,
        activates_at: Option<SystemTime>,
    },
    Scheduled {
        kid: Kid,
        activates_at: SystemTime,
    },
    Activated {
        kid: Kid,
    },
    Retired {
        kid: Kid,
        until: SystemTime,
    },
    Removed {
        kid: Kid,
    },
}

/// Logs each event with `tracing`, once its change is published.
pub(super) fn emit(events: &[Event]) {
    for event in events {
        match event {
            Event::Published { kid, activates_at } => tracing::info!(
                kid = %kid,
                activates_at = ?activates_at.map(unix_seconds),
                "key published"
            ),
            Event::Scheduled { kid, activates_at } => tracing::info!(
                kid = %kid,
                activates_at = unix_seconds(*activates_at),
                "key activation scheduled"
            ),
            Event::Activated { kid } => tracing::info!(kid = %kid, "key activated"),
            Event::Retired { kid, until } => tracing::info!(
                kid = %kid,
                retires_at = unix_seconds(*until),
                "key retired"
            ),
            Event::Removed { kid } => tracing::info!(kid = %kid, "key removed"),
        }
    }
}
