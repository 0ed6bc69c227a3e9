//! [`StoreNotifications`]: a store that pushes its changes (Redis pub/sub)
//! tells its followers at once instead of waiting for their next poll.

use std::fmt;

use tokio::sync::watch;

/// Tells a [`StoreFollower`](crate::registry::StoreFollower) that the store
/// may have changed, as soon as the store knows (a Redis pub/sub message,
/// a reconnection after which messages may have been lost). Handed out by
/// [`KeyStore::notifications`](super::KeyStore::notifications).
///
/// Notifications only wake the follower: it then reloads the store, which
/// stays the one source of truth. Several notifications that arrive while
/// the follower reloads count as one.
#[derive(Debug)]
pub struct StoreNotifications {
    changes: watch::Receiver<u64>,
}

/// The sending side of [`StoreNotifications`], kept by the store's task
/// that listens for changes.
pub struct StoreNotifier {
    changes: watch::Sender<u64>,
}

impl StoreNotifications {
    /// A connected pair: what [`StoreNotifier::notify`] sends,
    /// [`StoreNotifications::changed`] receives.
    pub fn channel() -> (StoreNotifier, StoreNotifications) {
        let (changes, receiver) = watch::channel(0);
        (
            StoreNotifier { changes },
            StoreNotifications { changes: receiver },
        )
    }

    /// Waits for the next notification. `false` once the notifier is gone:
    /// no more notifications will come (the follower keeps polling).
    pub async fn changed(&mut self) -> bool {
        self.changes.changed().await.is_ok()
    }
}

impl StoreNotifier {
    /// Tells the follower that the store may have changed.
    pub fn notify(&self) {
        self.changes
            .send_modify(|count| *count = count.wrapping_add(1));
    }

    /// Whether the [`StoreNotifications`] was dropped (the follower
    /// stopped): the task that feeds it can stop too.
    pub fn is_closed(&self) -> bool {
        self.changes.is_closed()
    }

    /// Waits until the [`StoreNotifications`] is dropped.
    pub async fn closed(&self) {
        self.changes.closed().await;
    }
}

impl fmt::Debug for StoreNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreNotifier")
            .field("closed", &self.is_closed())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn notifications_coalesce_and_end_with_the_notifier() {
        let (notifier, mut notifications) = StoreNotifications::channel();
        notifier.notify();
        notifier.notify();
        assert!(
            notifications.changed().await,
            "two notifications, one wake-up"
        );
        assert!(!notifier.is_closed());
        drop(notifier);
        assert!(!notifications.changed().await, "the notifier is gone");

        let (notifier, notifications) = StoreNotifications::channel();
        drop(notifications);
        assert!(notifier.is_closed());
        notifier.closed().await;
    }
}
