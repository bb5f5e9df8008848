//! The page frame and the small renderings every page shares (times, sizes, status words).

use maud::{DOCTYPE, Markup, Render, html};

use super::session::Authed;
use crate::core::model::Millis;

/// Which section a page belongs to (marked in the navigation).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Batches,
    Tasks,
    Workers,
    Recruiters,
    Jobs,
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · scitq" }
            link rel="stylesheet" href="/ui/static/style.css";
            script src="/ui/static/app.js" defer {}
        }
    }
}

/// A page of a logged-in user: navigation, the note an action left, the content.
/// `refresh`: seconds between reloads of `main` while nobody types (0: none).
pub fn page(
    authed: &Authed,
    section: Section,
    title: &str,
    note: Option<&str>,
    refresh: u32,
    content: Markup,
) -> Markup {
    let current = |s: Section| if s == section { Some("page") } else { None };
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    nav aria-label="Sections" {
                        a.brand href="/ui/" { "scitq" }
                        a href="/ui/" aria-current=[current(Section::Batches)] { "Batches" }
                        a href="/ui/tasks" aria-current=[current(Section::Tasks)] { "Tasks" }
                        a href="/ui/workers" aria-current=[current(Section::Workers)] { "Workers" }
                        a href="/ui/recruiters" aria-current=[current(Section::Recruiters)] { "Recruiters" }
                        a href="/ui/jobs" aria-current=[current(Section::Jobs)] { "Jobs" }
                    }
                    form.logout method="post" action="/ui/logout" {
                        (csrf(authed))
                        button type="submit" { "Log out" }
                    }
                }
                main #main data-refresh=[(refresh > 0).then_some(refresh)] {
                    @if let Some(note) = note.filter(|n| !n.is_empty()) {
                        p.note role="status" { (note) }
                    }
                    (content)
                }
            }
        }
    }
}

/// A page without navigation (login, errors).
pub fn bare(title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body.bare { main #main { (content) } }
        }
    }
}

/// A table of class `class` with a column header per item of `headers`, in a box that
/// scrolls sideways on a narrow screen (the page itself does not).
pub fn table(class: &str, headers: &[&dyn Render], rows: Markup) -> Markup {
    html! {
        div.scroll {
            table class=(class) {
                thead { tr { @for h in headers { th scope="col" { (h) } } } }
                tbody { (rows) }
            }
        }
    }
}

/// The hidden CSRF field every form that changes something carries.
pub fn csrf(authed: &Authed) -> Markup {
    html! { input type="hidden" name="csrf" value=(authed.csrf); }
}

/// A status word in a tag whose class colours it; the word itself says it all.
pub fn status(word: &str) -> Markup {
    html! { span class={ "st st-" (word) } { (word) } }
}

/// A stored time, in UTC to the second.
pub fn time(ms: Millis) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .replace('T', " ")
        .replace('Z', " UTC")
}

pub fn opt_time(ms: Option<Millis>) -> String {
    ms.map(time).unwrap_or_else(|| "—".to_owned())
}

/// A duration between two stored times, rounded to the second.
pub fn span(from: Millis, to: Millis) -> String {
    let secs = ((to - from).max(0) + 500) / 1000;
    humantime::format_duration(std::time::Duration::from_secs(secs as u64)).to_string()
}

/// How long ago a stored time was, rounded to the second.
pub fn age(since: Millis) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| {
            Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX)
        });
    span(since, now)
}

/// A configured duration, as the config and the CLI write it (`5m`, `1h 30m`).
pub fn duration(d: std::time::Duration) -> String {
    humantime::format_duration(std::time::Duration::from_secs(d.as_secs())).to_string()
}

/// Bytes in binary units, one decimal.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renderings() {
        assert_eq!(time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(span(1_000, 62_400), "1m 1s");
        assert_eq!(duration(std::time::Duration::from_millis(300_400)), "5m");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 << 29), "1.5 GiB");
    }

    #[test]
    fn a_table_has_its_headers_in_a_scrolling_box() {
        let html = table(
            "t",
            &[&"A<", &html! { abbr { "B" } }],
            html! { tr { td { "1" } } },
        )
        .into_string();
        assert_eq!(
            html,
            "<div class=\"scroll\"><table class=\"t\"><thead><tr>\
             <th scope=\"col\">A&lt;</th><th scope=\"col\"><abbr>B</abbr></th></tr></thead>\
             <tbody><tr><td>1</td></tr></tbody></table></div>"
        );
    }

    #[test]
    fn values_are_escaped() {
        let word = status("<script>alert(1)</script>").into_string();
        assert!(!word.contains("<script>"), "{word}");
        assert!(word.contains("&lt;script&gt;"), "{word}");
    }
}
