use super::*;

fn config(idle_minutes: f64, speed: f64) -> ClusterConfig {
    let yaml = format!(
        "cluster_name: r\nmax_workers: 30\nidle_timeout_minutes: {idle_minutes}\nupscaling_speed: {speed}\n\
         provider: {{type: fake_multinode}}\n\
         available_node_types:\n  head: {{resources: {{CPU: 0}}, node_config: {{}}, max_workers: 0}}\n\
         \x20 small: {{resources: {{CPU: 1}}, node_config: {{}}, max_workers: 30, price: 0.1}}\n\
         head_node_type: head\n"
    );
    ClusterConfig::parse("c.yaml", &yaml).unwrap()
}

#[test]
fn a_burst_scales_up_after_the_launch_delay_and_back_down_after_the_idle_timeout() {
    let steps = parse_trace("t.yaml", "steps:\n  - {at: 0, bundles: [{resources: {CPU: 1}, count: 8}]}\n  - {at: 600}\n").unwrap();
    let r = replay(&config(1.0, 100.0), &steps, Options { tick_s: 10.0, launch_delay_s: 60.0 });
    assert_eq!(r.peak_nodes, 8, "{r:?}");
    let first = &r.samples[0];
    assert_eq!((first.launching, first.unplaced), (8, 8), "launched at once, not up yet: {first:?}");
    let up = r.samples.iter().find(|s| s.nodes.get("small") == Some(&8)).expect("all 8 up");
    assert_eq!((up.t_s, up.unplaced), (60.0, 0), "up after the launch delay, and the demand placed: {up:?}");
    let last = r.samples.last().unwrap();
    assert!(last.nodes.is_empty() && last.launching == 0, "back to no workers: {last:?}");
    // Idle from 600 s, retired once idle for a minute.
    assert!((660.0..=690.0).contains(&last.t_s), "{last:?}");
    // Billed from launch to retirement: 8 nodes x $0.1/h x about 670 s.
    let expected = 8.0 * 0.1 * 670.0 / 3600.0;
    assert!((r.total_cost - expected).abs() < 8.0 * 0.1 * 20.0 / 3600.0, "{} vs {expected}", r.total_cost);
    assert!((r.waiting_bundle_seconds - 8.0 * 60.0).abs() <= 8.0 * 10.0, "{}", r.waiting_bundle_seconds);
    let text = render(&r, true);
    assert!(text.contains("Peak 8 worker(s)"), "{text}");
}

#[test]
fn upscaling_speed_paces_the_launches() {
    let steps = parse_trace("t.yaml", "steps:\n  - {at: 0, bundles: [{resources: {CPU: 1}, count: 20}]}\n  - {at: 300}\n").unwrap();
    let r = replay(&config(1.0, 1.0), &steps, Options { tick_s: 10.0, launch_delay_s: 30.0 });
    assert_eq!(r.samples[0].launching, 5, "at most 5 in flight at first: {:?}", r.samples[0]);
    assert_eq!(r.peak_nodes, 20, "{r:?}");
    let all_up = r.samples.iter().find(|s| s.nodes.get("small") == Some(&20)).expect("all 20 up");
    assert!(all_up.t_s > 30.0, "later than one launch delay: {all_up:?}");
}

#[test]
fn bad_traces_name_the_step() {
    let e = parse_trace("t.yaml", "steps:\n  - {at: 10}\n  - {at: 5}\n").unwrap_err();
    assert_eq!((e.line, e.path.as_str()), (3, "steps[1].at"), "{e}");
    let e = parse_trace("t.yaml", "steps:\n  - {at: 0, bundles: [{resources: {GPU: x}}]}\n").unwrap_err();
    assert_eq!(e.path, "steps[0].bundles[0].resources.GPU", "{e}");
    let e = parse_trace("t.yaml", "steps:\n  - {bundles: []}\n").unwrap_err();
    assert!(e.message.contains("missing `at`"), "{e}");
    assert!(parse_trace("t.yaml", "steps: []\n").is_err());
}
