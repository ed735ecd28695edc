//! The terminal view of `insync cluster watch` (ratatui + crossterm, alternate screen):
//! brokers, partitions with per-replica LEO and lag, recently changed cells highlighted, and
//! the failover timeline. `run` owns the terminal; a guard restores it on every way out
//! (q, Esc, Ctrl-C, SIGINT, an error, a panic).
use std::collections::VecDeque;
use std::io::stdout;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossterm::event::{self, Event as TermEvent, KeyCode, KeyEventKind, KeyModifiers};
use insync_types::now_epoch_ms;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, List, ListItem, Paragraph, Row, Table};
use ratatui::Frame;
use tokio::sync::mpsc;

use super::collect::Collector;
use super::highlight::Highlights;
use super::snapshot::{ids, leader_text, opt, MetadataSource, Snapshot};
use super::timeline::{clock, Event, EventKind, Timeline};

/// Timeline lines kept for the pane (the screen shows the newest that fit).
const TIMELINE_KEPT: usize = 200;

/// Everything on screen, kept between refreshes.
struct ViewState {
    snapshot: Option<Snapshot>,
    highlights: Highlights,
    events: VecDeque<Event>,
    last_error: Option<String>,
    last_round_ms: u128,
    interval: Duration,
    episode_started_ms: Option<i64>,
}

/// What the key-reader thread reports.
enum Input {
    Quit,
    Redraw,
}

/// Restores the terminal when dropped, whatever ended the view.
struct TerminalGuard;

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        let _ = ratatui::try_restore();
        let _ = crossterm::execute!(stdout(), crossterm::cursor::Show);
    }
}

pub async fn run(mut collector: Collector, interval: Duration) -> anyhow::Result<()> {
    let _guard = TerminalGuard;
    let mut terminal = ratatui::try_init()?;
    let stop = Arc::new(AtomicBool::new(false));
    let (input_tx, mut input) = mpsc::channel::<Input>(16);
    let reader = {
        let stop = Arc::clone(&stop);
        // crossterm's reader blocks; a thread polling with a short timeout can notice `stop`.
        std::thread::spawn(move || read_keys(&stop, &input_tx))
    };
    let mut timeline = Timeline::new();
    let mut view = ViewState {
        snapshot: None,
        highlights: Highlights::default(),
        events: VecDeque::new(),
        last_error: None,
        last_round_ms: 0,
        interval,
        episode_started_ms: None,
    };
    let result = async {
        loop {
            terminal.draw(|f| draw(f, &view))?;
            let started = Instant::now();
            // A round can take up to a call deadline when a broker is paused: keep keys live.
            let outcome = tokio::select! {
                outcome = collector.collect() => outcome,
                quit = wait_for_quit(&mut input, &mut terminal, &view) => { quit?; return Ok(()); }
                _ = tokio::signal::ctrl_c() => return Ok(()),
            };
            view.last_round_ms = started.elapsed().as_millis();
            match outcome {
                Ok(snapshot) => {
                    view.last_error = None;
                    for event in timeline.observe(&snapshot) {
                        if view.events.len() == TIMELINE_KEPT {
                            view.events.pop_front();
                        }
                        view.events.push_back(event);
                    }
                    view.episode_started_ms = timeline.episode_started_ms();
                    view.highlights.update(snapshot.at_ms, cells(&snapshot));
                    view.snapshot = Some(snapshot);
                }
                Err(e) => view.last_error = Some(format!("{e:#}")),
            }
            terminal.draw(|f| draw(f, &view))?;
            let pause = interval.saturating_sub(started.elapsed());
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                quit = wait_for_quit(&mut input, &mut terminal, &view) => { quit?; return Ok(()); }
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
        }
    }
    .await;
    stop.store(true, Ordering::Relaxed);
    let _ = reader.join();
    result
}

/// Redraws on resize; returns when the user asks to quit (or the reader is gone).
async fn wait_for_quit(
    input: &mut mpsc::Receiver<Input>,
    terminal: &mut ratatui::DefaultTerminal,
    view: &ViewState,
) -> anyhow::Result<()> {
    loop {
        match input.recv().await {
            Some(Input::Redraw) => {
                terminal.draw(|f| draw(f, view))?;
            }
            Some(Input::Quit) | None => return Ok(()),
        }
    }
}

fn read_keys(stop: &AtomicBool, tx: &mpsc::Sender<Input>) {
    while !stop.load(Ordering::Relaxed) {
        match event::poll(Duration::from_millis(100)) {
            Ok(false) => continue,
            Ok(true) => {}
            Err(_) => {
                let _ = tx.blocking_send(Input::Quit);
                return;
            }
        }
        let input = match event::read() {
            Ok(TermEvent::Key(key)) if key.kind != KeyEventKind::Release => match key.code {
                KeyCode::Char('q') | KeyCode::Esc => Input::Quit,
                KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => Input::Quit,
                _ => continue,
            },
            Ok(TermEvent::Resize(..)) => Input::Redraw,
            Ok(_) => continue,
            Err(_) => Input::Quit,
        };
        let quit = matches!(input, Input::Quit);
        if tx.blocking_send(input).is_err() || quit {
            return;
        }
    }
}

/// The values whose change is worth a highlight (not heartbeat ages: they always move).
fn cells(s: &Snapshot) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for b in &s.brokers {
        out.push((format!("b{}/status", b.id), b.status().to_string()));
        out.push((format!("b{}/describe", b.id), b.describe_error.clone().unwrap_or_default()));
    }
    for p in &s.partitions {
        let name = p.name();
        out.push((format!("{name}/leader"), p.leader.to_string()));
        out.push((format!("{name}/epoch"), p.leader_epoch.to_string()));
        out.push((format!("{name}/isr"), ids(&p.isr)));
        out.push((format!("{name}/hw"), opt(p.high_watermark)));
        for r in &p.replica_states {
            out.push((format!("{name}/leo/{}", r.broker), format!("{}/{}", opt(r.log_end_offset), opt(r.lag))));
        }
    }
    out
}

fn hot(view: &ViewState, key: &str, now_ms: i64) -> Style {
    if view.highlights.is_hot(key, now_ms) {
        Style::new().fg(Color::Black).bg(Color::Yellow).add_modifier(Modifier::BOLD)
    } else {
        Style::new()
    }
}

fn draw(frame: &mut Frame, view: &ViewState) {
    let now_ms = now_epoch_ms();
    let brokers = view.snapshot.as_ref().map_or(0, |s| s.brokers.len()) as u16;
    let partitions = view.snapshot.as_ref().map_or(0, |s| s.partitions.len()) as u16;
    let [header, broker_area, partition_area, timeline_area] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Length(brokers + 3),
        Constraint::Max(partitions + 3),
        Constraint::Min(6),
    ])
    .areas(frame.area());
    draw_header(frame, view, header, now_ms);
    if let Some(s) = &view.snapshot {
        draw_brokers(frame, view, s, broker_area, now_ms);
        draw_partitions(frame, view, s, partition_area, now_ms);
    }
    draw_timeline(frame, view, timeline_area);
}

fn draw_header(frame: &mut Frame, view: &ViewState, area: Rect, now_ms: i64) {
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let mut lines = vec![Line::from(vec![
        Span::styled("insync cluster watch", bold),
        Span::raw(format!(
            "  {} UTC · refresh every {} ms (last round {} ms) · q quits",
            clock(now_ms),
            view.interval.as_millis(),
            view.last_round_ms
        )),
    ])];
    match &view.snapshot {
        None => lines.push(Line::from("waiting for the first snapshot…")),
        Some(s) => {
            let style = match s.source {
                MetadataSource::Controller { .. } => Style::new().fg(Color::Cyan),
                MetadataSource::BrokerCache { .. } => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            };
            lines.push(Line::from(Span::styled(s.header(), style)));
        }
    }
    match (&view.last_error, view.episode_started_ms) {
        (Some(e), _) => {
            lines.push(Line::from(Span::styled(format!("refresh failed: {e}"), Style::new().fg(Color::Red))))
        }
        (None, Some(start)) => lines.push(Line::from(Span::styled(
            format!("failover in progress: +{} ms", now_ms - start),
            Style::new().fg(Color::Magenta).add_modifier(Modifier::BOLD),
        ))),
        (None, None) => {}
    }
    frame.render_widget(Paragraph::new(lines), area);
}

fn draw_brokers(frame: &mut Frame, view: &ViewState, s: &Snapshot, area: Rect, now_ms: i64) {
    let rows = s.brokers.iter().map(|b| {
        let status_color = match b.status() {
            "alive" => Color::Green,
            "fenced" => Color::Red,
            _ => Color::Magenta,
        };
        let status = Style::new().fg(status_color).patch(hot(view, &format!("b{}/status", b.id), now_ms));
        let leads = s.partitions.iter().filter(|p| p.leader == b.id).count();
        // In combined mode a node is broker and controller on one address.
        let role = if b.address == s.controller_address { " (controller)" } else { "" };
        Row::new(vec![
            Cell::from(format!("{}{role}", b.id)),
            Cell::from(b.address.clone()),
            Cell::from(b.status()).style(status),
            Cell::from(b.heartbeat_text()),
            Cell::from(b.describe_error.clone().unwrap_or_else(|| "ok".into())).style(hot(
                view,
                &format!("b{}/describe", b.id),
                now_ms,
            )),
            Cell::from(leads.to_string()),
        ])
    });
    let header = Row::new(["Broker", "Address", "Status", "Last heartbeat", "DescribeReplicas", "Leads"])
        .style(Style::new().add_modifier(Modifier::BOLD));
    let widths = [
        Constraint::Length(16),
        Constraint::Length(22),
        Constraint::Length(15),
        Constraint::Length(15),
        Constraint::Length(24),
        Constraint::Length(6),
    ];
    let table = Table::new(rows, widths).header(header).block(Block::bordered().title(" Brokers "));
    frame.render_widget(table, area);
}

fn draw_partitions(frame: &mut Frame, view: &ViewState, s: &Snapshot, area: Rect, now_ms: i64) {
    let rows = s.partitions.iter().map(|p| {
        let name = p.name();
        let key = |what: &str| format!("{name}/{what}");
        let mut spans = Vec::new();
        for r in &p.replica_states {
            let text = match (r.log_end_offset, r.lag) {
                (Some(leo), Some(lag)) => format!("{}:{leo} lag {lag}", r.broker),
                (Some(leo), None) => format!("{}:{leo}", r.broker),
                (None, _) => format!("{}:?", r.broker),
            };
            // Replicas outside the ISR are dimmed: their LEO does not hold the HW back.
            let base = if p.isr.contains(&r.broker) { Style::new() } else { Style::new().fg(Color::DarkGray) };
            spans.push(Span::styled(text, base.patch(hot(view, &key(&format!("leo/{}", r.broker)), now_ms))));
            spans.push(Span::raw("  "));
        }
        let note_style = if p.leader < 0 { Style::new().fg(Color::Red) } else { Style::new().fg(Color::Yellow) };
        Row::new(vec![
            Cell::from(name.clone()),
            Cell::from(leader_text(p.leader)).style(hot(view, &key("leader"), now_ms)),
            Cell::from(p.leader_epoch.to_string()).style(hot(view, &key("epoch"), now_ms)),
            Cell::from(ids(&p.replicas)),
            Cell::from(ids(&p.isr)).style(hot(view, &key("isr"), now_ms)),
            Cell::from(opt(p.high_watermark)).style(hot(view, &key("hw"), now_ms)),
            Cell::from(Line::from(spans)),
            Cell::from(p.notes.join("; ")).style(note_style),
        ])
    });
    let header = Row::new(["Partition", "Leader", "Epoch", "Replicas", "ISR", "HW", "LEO per replica", "Note"])
        .style(Style::new().add_modifier(Modifier::BOLD));
    let widths = [
        Constraint::Length(16),
        Constraint::Length(6),
        Constraint::Length(5),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(54),
        Constraint::Min(10),
    ];
    let title = format!(" Partitions ({}) ", s.partitions.len());
    let table = Table::new(rows, widths).header(header).block(Block::bordered().title(title));
    frame.render_widget(table, area);
}

fn draw_timeline(frame: &mut Frame, view: &ViewState, area: Rect) {
    let visible = area.height.saturating_sub(2) as usize;
    let skip = view.events.len().saturating_sub(visible);
    let items = view.events.iter().skip(skip).map(|e| {
        let style = match e.kind {
            EventKind::FailoverSummary { .. } => Style::new().fg(Color::Green).add_modifier(Modifier::BOLD),
            EventKind::HeartbeatLost { .. } | EventKind::Fenced { .. } | EventKind::Offline { .. } => {
                Style::new().fg(Color::Red)
            }
            EventKind::LeaderChanged { .. } | EventKind::FirstProduce { .. } => Style::new().fg(Color::Cyan),
            _ => Style::new(),
        };
        ListItem::new(Line::from(Span::styled(e.line(), style)))
    });
    let empty = view.events.is_empty();
    let title = if empty { " Failover timeline (no events yet) " } else { " Failover timeline " };
    frame.render_widget(List::new(items).block(Block::bordered().title(title)), area);
}
