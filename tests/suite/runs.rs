use crate::suite::common::*;

#[test]
fn runs_list_is_empty_and_show_of_a_missing_run_is_a_usage_error() {
    let t = TestContext::new();
    let o = t.run(&["runs", "list", "--json"]);
    assert_eq!(code(&o), 0);
    assert_eq!(json(&o)["runs"], serde_json::json!([]));
    let o = t.run(&["runs", "show", "20991231T000000Z-x-1-abcd"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("runs list"), "{}", stderr(&o));
}
