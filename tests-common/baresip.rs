//! A baresip phone for tests (included with `#[path]`): configured in a folder of its
//! own, registering with digest, sending a sine tone of its own as G.711, answering
//! by itself, and recording what it hears (baresip's sndfile module).

#![allow(dead_code)] // each crate uses a subset
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::service::free_port;

/// baresip is installed; under CI=true its absence fails the test instead.
pub fn baresip_available() -> bool {
    if Command::new("baresip").arg("-h").output().is_ok() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "baresip is not installed: the test command installs baresip-core; CI must not skip this test"
        );
    }
    eprintln!(
        "SKIPPING: baresip not installed (apt-get install baresip-core); under CI=true this fails"
    );
    false
}

/// A baresip phone for `device` (with `password`) registering at `tpo`, listening on
/// `ip`, sending a sine of `tone_hz`, recording what it hears into its folder.
pub struct Phone {
    pub dir: PathBuf,
    /// `None` once it has quit.
    pub child: Option<Child>,
}

impl Phone {
    pub fn start(
        root: &Path,
        device: &str,
        password: &str,
        tpo: SocketAddr,
        ip: &str,
        tone_hz: u32,
        rtp_ports: (u16, u16),
    ) -> Self {
        let dir = root.join(device);
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port(ip);
        // ausine makes 48 kHz stereo; baresip resamples to the 8 kHz G.711 codec.
        let config = format!(
            "poll_method epoll\n\
             sip_listen {ip}:{port}\n\
             audio_source ausine,{tone_hz}\n\
             audio_player aubridge,nil\n\
             audio_alert aubridge,nil\n\
             ausrc_srate 48000\n\
             auplay_srate 48000\n\
             ausrc_channels 2\n\
             rtp_ports {}-{}\n\
             module_path /usr/lib/baresip/modules\n\
             module stdio.so\n\
             module g711.so\n\
             module ausine.so\n\
             module aubridge.so\n\
             module sndfile.so\n\
             module account.so\n\
             module_app menu.so\n\
             snd_path {}\n",
            rtp_ports.0,
            rtp_ports.1,
            dir.display()
        );
        std::fs::write(dir.join("config"), config).unwrap();
        std::fs::write(
            dir.join("accounts"),
            format!("<sip:{device}@{tpo}>;auth_pass={password};regint=120;answermode=auto\n"),
        )
        .unwrap();
        let child = Command::new("baresip")
            .args(["-f", &dir.display().to_string()])
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(std::fs::File::create(dir.join("baresip.log")).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Phone {
            dir,
            child: Some(child),
        }
    }

    /// Types a command at the phone's console.
    pub fn command(&mut self, line: &str) {
        let stdin = self.child.as_mut().and_then(|c| c.stdin.as_mut()).unwrap();
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("baresip.log")).unwrap_or_default()
    }

    /// The phone's decoded-audio recordings (one a call), oldest first: their names
    /// carry the time.
    pub fn recordings(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with("-dec.wav"))
            .collect();
        files.sort();
        files
    }

    /// Samples heard so far in the call after the phone's first `calls` ones (0 until
    /// that call's recording starts): sndfile writes as the audio comes.
    pub fn heard_in_call(&self, calls: usize) -> u64 {
        self.recordings()
            .get(calls)
            .and_then(|f| std::fs::metadata(f).ok())
            .map_or(0, |m| m.len().saturating_sub(44) / 2)
    }

    /// What the phone heard in its last call: the samples of its recording.
    pub fn heard(&self) -> Vec<i16> {
        let file = self
            .recordings()
            .pop()
            .unwrap_or_else(|| panic!("no recording in {}: {}", self.dir.display(), self.log()));
        wav_samples(&std::fs::read(file).unwrap())
    }

    pub fn quit(mut self) {
        self.command("/quit");
        if let Some(child) = self.child.take() {
            crate::service::wait_exit(child, Duration::from_secs(5));
        }
    }
}

/// The 16-bit samples of a PCM WAV file's `data` chunk.
pub fn wav_samples(bytes: &[u8]) -> Vec<i16> {
    let at = bytes
        .windows(4)
        .position(|w| w == b"data")
        .expect("a data chunk");
    bytes[at + 8..]
        .chunks_exact(2)
        .map(|s| i16::from_le_bytes([s[0], s[1]]))
        .collect()
}

impl Drop for Phone {
    /// A phone left running with its console closed spins (baresip reads EOF again and
    /// again): a test that ends early kills it.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
