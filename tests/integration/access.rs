//! Access groups filter inside retrieval: restricted documents are invisible to searches
//! without the group, and never crowd permitted hits out of the top k.

use sputnik::ingest::ImportRequest;

use crate::common::*;

#[test]
fn group_documents_are_found_only_by_searches_allowed_that_group() {
    let tmp = tempfile::tempdir().unwrap();
    let mut app = open_app(&tmp.path().join("data"));
    import(&mut app, &[&repo_path("assets/handbook")], Default::default());
    let managers = repo_path("assets/handbook-managers");
    let report = import(
        &mut app,
        &[&managers],
        ImportRequest { groups: vec!["Managers".into()], ..Default::default() },
    );
    assert_eq!(report.added, 2, "{report:?}");

    let query = "salary review budget for my team";
    let public = search(&app, query, 10, &[]);
    assert!(public.iter().all(|h| h.source != "salary-review.md"), "{:?}", sources(&public));
    let as_other_group = search(&app, query, 10, &["sales"]);
    assert!(as_other_group.iter().all(|h| h.source != "salary-review.md"));
    let as_manager = search(&app, query, 10, &["managers"]);
    assert_eq!(as_manager[0].source, "salary-review.md", "{:?}", sources(&as_manager));
    // Public documents stay visible to group members.
    assert!(search(&app, "laptop stopped charging", 3, &["managers"])[0].source == "en/it-equipment.md");

    let ru = search(&app, "пересмотр зарплаты сотрудникам команды", 5, &["managers"]);
    assert_eq!(ru[0].source, "peresmotr-zarplat.md", "{:?}", sources(&ru));
    assert!(
        search(&app, "пересмотр зарплаты сотрудникам команды", 10, &[])
            .iter()
            .all(|h| h.source != "peresmotr-zarplat.md")
    );
}

#[test]
fn filtering_happens_before_the_top_k_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let restricted = tmp.path().join("restricted");
    let open = tmp.path().join("open");
    std::fs::create_dir_all(&restricted).unwrap();
    std::fs::create_dir_all(&open).unwrap();
    for i in 0..15 {
        std::fs::write(
            restricted.join(format!("bonus-{i}.md")),
            format!("# Bonus plan {i}\n\nThe retention bonus pool, bonus targets and bonus payouts for quarter {i}."),
        )
        .unwrap();
    }
    std::fs::write(
        open.join("handbook.md"),
        "# Handbook\n\nAsk HR about the annual bonus and many other topics.",
    )
    .unwrap();

    let mut app = open_app(&tmp.path().join("data"));
    import(&mut app, &[&restricted], ImportRequest { groups: vec!["board".into()], ..Default::default() });
    import(&mut app, &[&open], Default::default());

    let hits = search(&app, "bonus", 1, &[]);
    assert_eq!(sources(&hits), ["handbook.md"]);
    let hits = search(&app, "bonus", 3, &["board"]);
    assert!(hits.iter().all(|h| h.source.starts_with("bonus-")), "{:?}", sources(&hits));
}

#[test]
fn changing_groups_on_reimport_updates_visibility_without_rechunking() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("docs");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("plan.md"), "# Layoff plan\n\nConfidential restructuring timeline.").unwrap();
    let mut app = open_app(&tmp.path().join("data"));
    import(&mut app, &[&dir], ImportRequest { groups: vec!["board".into()], ..Default::default() });
    assert!(search(&app, "restructuring timeline", 5, &[]).is_empty());

    let report = import(&mut app, &[&dir], Default::default());
    assert_eq!((report.updated, report.chunks_written), (1, 0));
    assert_eq!(search(&app, "restructuring timeline", 5, &[]).len(), 1);

    let report =
        import(&mut app, &[&dir], ImportRequest { groups: vec!["board".into()], ..Default::default() });
    assert_eq!(report.updated, 1);
    assert!(search(&app, "restructuring timeline", 5, &[]).is_empty());
}
