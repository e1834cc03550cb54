//! A simulated turret: logs in over FTPES and reads its profile ([`login`]), registers
//! with the TPOs the profile lists and makes and takes calls carrying a G.711 tone of
//! its own ([`ua`], [`media`]). [`Turret`] is the handle the scenario runner and the
//! load generator drive; the SIP side runs in a task of its own.

pub mod login;
pub mod media;
pub mod ua;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use floorwire::sip::transaction::{LayerConfig, TransactionLayer};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::Error;
pub use ua::{CallState, CallView, Command, UaConfig, View};

/// Commands waiting for a turret's loop at most.
const COMMANDS_QUEUED: usize = 1024;

/// The header the TPO names who answered with.
pub const ANSWERED_BY: &str = "X-Floorwire-Answered-By";

/// A running simulated turret.
#[derive(Debug)]
pub struct Turret {
    /// The user it is logged in as.
    pub user: String,
    /// Its SIP address.
    pub local: SocketAddr,
    commands: mpsc::Sender<Command>,
    view: watch::Receiver<View>,
    media: watch::Receiver<Vec<(u64, media::MediaLeg)>>,
    stop: CancellationToken,
}

impl Turret {
    /// Binds the turret's SIP socket at `config.local` and starts its user agent.
    pub async fn start(user: &str, mut config: UaConfig) -> Result<Self, Error> {
        let socket = tokio::net::UdpSocket::bind(config.local)
            .await
            .map_err(|e| Error::Turret(format!("{user}: SIP {}: {e}", config.local)))?;
        config.local = socket.local_addr()?;
        let local = config.local;
        let (commands, rx) = mpsc::channel(COMMANDS_QUEUED);
        let (view_tx, view) = watch::channel(View::default());
        let (media_tx, media) = watch::channel(Vec::new());
        let stop = CancellationToken::new();
        tokio::spawn(drive(
            socket,
            ua::TurretUa::new(config),
            rx,
            view_tx,
            media_tx,
            stop.clone(),
        ));
        Ok(Self {
            user: user.to_owned(),
            local,
            commands,
            view,
            media,
            stop,
        })
    }

    fn send(&self, command: Command) -> Result<(), Error> {
        self.commands.try_send(command).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Error::Turret(format!(
                "{}: {COMMANDS_QUEUED} commands waiting already",
                self.user
            )),
            mpsc::error::TrySendError::Closed(_) => {
                Error::Turret(format!("{}: the turret has stopped", self.user))
            }
        })
    }

    /// What the turret knows now.
    pub fn view(&self) -> View {
        self.view.borrow().clone()
    }

    /// Waits until `check` holds of the view, at most `within`; `what` names it in the
    /// error.
    pub async fn wait_for(
        &self,
        what: &str,
        within: Duration,
        check: impl Fn(&View) -> bool,
    ) -> Result<View, Error> {
        let mut view = self.view.clone();
        let waited = tokio::time::timeout(within, view.wait_for(|v| check(v))).await;
        match waited {
            Ok(Ok(v)) => Ok(v.clone()),
            _ => Err(Error::Turret(format!(
                "{}: {what}: not within {} ms (turret: {})",
                self.user,
                within.as_millis(),
                summary(&self.view())
            ))),
        }
    }

    pub fn register(&self) -> Result<(), Error> {
        self.send(Command::Register)
    }

    /// Calls `number`; returns the call's id.
    pub async fn call(&self, number: &str) -> Result<u64, Error> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.send(Command::Call {
            number: number.to_owned(),
            reply,
        })?;
        answer
            .await
            .map_err(|_| Error::Turret(format!("{}: the turret has stopped", self.user)))?
    }

    pub fn answer(&self, call: u64) -> Result<(), Error> {
        self.send(Command::Answer(call))
    }

    pub fn hang_up(&self, call: u64) -> Result<(), Error> {
        self.send(Command::Hangup(call))
    }

    pub fn hold(&self, call: u64, on: bool) -> Result<(), Error> {
        self.send(Command::Hold(call, on))
    }

    /// The media of call `id`.
    pub fn media(&self, id: u64) -> Option<media::MediaLeg> {
        self.media
            .borrow()
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, m)| m.clone())
    }

    /// The call that is neither ended nor ours-and-unanswered... the latest live one.
    pub fn current_call(&self) -> Option<CallView> {
        self.view()
            .calls
            .into_iter()
            .rev()
            .find(|c| c.state != CallState::Ended)
    }

    /// Stops the turret (its calls' media too).
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for Turret {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// One line for error messages: registration and calls.
pub fn summary(view: &View) -> String {
    let calls: Vec<String> = view
        .calls
        .iter()
        .map(|c| {
            format!(
                "call {} {} {} {:?}{}",
                c.id,
                if c.incoming { "from" } else { "to" },
                c.number,
                c.state,
                c.status.map(|s| format!(" ({s})")).unwrap_or_default()
            )
        })
        .collect();
    format!(
        "registered to {}, {}",
        view.registered_to
            .map(|r| r.to_string())
            .or_else(|| view
                .registration_error
                .as_ref()
                .map(|e| format!("nothing ({e})")))
            .unwrap_or_else(|| "nothing".into()),
        if calls.is_empty() {
            "no calls".into()
        } else {
            calls.join(", ")
        }
    )
}

/// The turret's SIP loop: datagrams in, commands, timers, events out.
async fn drive(
    socket: tokio::net::UdpSocket,
    mut ua: ua::TurretUa,
    mut commands: mpsc::Receiver<Command>,
    view: watch::Sender<View>,
    media: watch::Sender<Vec<(u64, media::MediaLeg)>>,
    stop: CancellationToken,
) {
    let mut layer = TransactionLayer::new(LayerConfig::default());
    let mut buf = vec![0u8; 65_536];
    loop {
        let deadline = [layer.poll_timeout(), ua.next_timer()]
            .into_iter()
            .flatten()
            .min();
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            received = socket.recv_from(&mut buf) => {
                if let Ok((n, source)) = received {
                    layer.handle_datagram(Instant::now(), source, &buf[..n]);
                }
            }
            command = commands.recv() => match command {
                Some(c) => ua.command(Instant::now(), c, &mut layer),
                None => break,
            },
            _ = sleep => {}
        }
        let now = Instant::now();
        if layer.poll_timeout().is_some_and(|at| at <= now) {
            layer.handle_timeout(now);
        }
        while let Some(event) = layer.poll_event() {
            ua.on_event(now, event, &mut layer);
        }
        if ua.next_timer().is_some_and(|at| at <= now) {
            ua.on_timer(now, &mut layer);
        }
        while let Some(t) = layer.poll_transmit() {
            let _ = socket.send_to(&t.bytes, t.destination).await;
        }
        if let Some(v) = ua.take_view() {
            let legs: Vec<(u64, media::MediaLeg)> = v
                .calls
                .iter()
                .filter_map(|c| ua.media(c.id).map(|m| (c.id, m)))
                .collect();
            media.send_replace(legs);
            view.send_replace(v);
        }
    }
    ua.stop_media();
}
