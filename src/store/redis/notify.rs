//! Change notifications: a task subscribed to the fleet's channel wakes a
//! follower on every change any replica commits.

use std::time::Duration;

use futures_util::StreamExt as _;
use futures_util::future::{Either, select};

use super::RedisKeyStore;
use crate::store::{StoreNotifications, StoreNotifier};

/// The longest wait between two attempts to subscribe again.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Spawns the task that feeds a follower's [`StoreNotifications`]; `None`
/// outside a tokio runtime (the follower then polls only).
pub(super) fn spawn(store: &RedisKeyStore) -> Option<StoreNotifications> {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!(
            store = %store.inner.name,
            "change notifications need a tokio runtime; polling only"
        );
        return None;
    };
    let (notifier, notifications) = StoreNotifications::channel();
    runtime.spawn(listen(store.clone(), notifier));
    Some(notifications)
}

/// Subscribes, forwards every message as a notification, and subscribes
/// again (with a backoff) whenever the connection is lost; ends when the
/// follower is gone. Each (re)subscription notifies once too: messages may
/// have been lost while it was down.
async fn listen(store: RedisKeyStore, notifier: StoreNotifier) {
    let inner = &store.inner;
    let mut backoff = Duration::from_millis(100);
    while !notifier.is_closed() {
        let subscribed = async {
            let mut pubsub =
                tokio::time::timeout(inner.connect_timeout, inner.client.get_async_pubsub())
                    .await
                    .map_err(|_| "connecting timed out".to_owned())?
                    .map_err(|err| err.to_string())?;
            tokio::time::timeout(inner.command_timeout, pubsub.subscribe(&inner.channel))
                .await
                .map_err(|_| "subscribing timed out".to_owned())?
                .map_err(|err| err.to_string())?;
            Ok::<_, String>(pubsub)
        }
        .await;
        match subscribed {
            Ok(pubsub) => {
                tracing::debug!(store = %inner.name, channel = %inner.channel, "listening for key store changes");
                backoff = Duration::from_millis(100);
                notifier.notify();
                let mut messages = pubsub.into_on_message();
                loop {
                    let next = messages.next();
                    let closed = std::pin::pin!(notifier.closed());
                    match select(next, closed).await {
                        Either::Left((Some(_), _)) => notifier.notify(),
                        Either::Left((None, _)) => break,
                        Either::Right(_) => return,
                    }
                }
                tracing::warn!(
                    store = %inner.name,
                    "lost the key store's change notifications; subscribing again (the poll covers meanwhile)"
                );
            }
            Err(err) => tracing::warn!(
                store = %inner.name,
                error = %err,
                retry_in = ?backoff,
                "cannot subscribe to the key store's change notifications; the poll covers meanwhile"
            ),
        }
        let sleep = std::pin::pin!(tokio::time::sleep(backoff));
        let closed = std::pin::pin!(notifier.closed());
        if let Either::Right(_) = select(sleep, closed).await {
            return;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
