//! `--watch`: redraw a listing every few seconds until interrupted.

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use clap::Args;

use super::Exit;

#[derive(Debug, Args, Clone, Copy)]
pub struct WatchArgs {
    /// Redraw every --interval seconds until interrupted (Ctrl-C)
    #[arg(long)]
    pub watch: bool,
    /// Seconds between redraws with --watch
    #[arg(long, value_name = "SECS", default_value_t = 2.0, requires = "watch",
          value_parser = parse_interval)]
    pub interval: f64,
}

fn parse_interval(text: &str) -> Result<f64, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("invalid interval {text:?}: expected seconds, e.g. 2 or 0.5"))?;
    if !(0.1..=3600.0).contains(&secs) {
        return Err(format!(
            "invalid interval {text:?}: between 0.1 and 3600 seconds"
        ));
    }
    Ok(secs)
}

/// Runs `render` once, or every interval with --watch (clearing a terminal first).
pub async fn run<F, Fut>(args: WatchArgs, mut render: F) -> anyhow::Result<Exit>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    if !args.watch {
        render().await?;
        return Ok(0);
    }
    let tty = std::io::stdout().is_terminal();
    loop {
        if tty {
            print!("\x1b[2J\x1b[H");
            let _ = std::io::stdout().flush();
        }
        render().await?;
        tokio::time::sleep(Duration::from_secs_f64(args.interval)).await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn intervals_are_checked() {
        assert_eq!(super::parse_interval("0.5"), Ok(0.5));
        assert!(super::parse_interval("0").is_err());
        assert!(
            super::parse_interval("soon")
                .unwrap_err()
                .contains("\"soon\"")
        );
    }
}
