use custos_records::{Value, seed_entities};

use super::*;

fn contact() -> EntityDef {
    seed_entities()
        .into_iter()
        .find(|e| e.logical_name == "contact")
        .expect("contact is seeded")
}

#[test]
fn csv_rows_become_typed_values_and_empty_cells_stay_default() {
    let id = Uuid::new_v4();
    let rows = parse_csv(
        &contact(),
        &format!(
            "\u{feff}contactid,firstname,lastname,birthdate,parentcustomerid\n{id},Ada,Lovelace,1815-12-10,\n,Alan,\"Turing, A.\",,\n"
        ),
    )
    .expect("valid file");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].0, Some(id));
    assert_eq!(
        rows[0].1,
        vec![
            ("firstname".to_string(), Value::String("Ada".into())),
            ("lastname".to_string(), Value::String("Lovelace".into())),
            (
                "birthdate".to_string(),
                Value::DateTime("1815-12-10T00:00:00.000Z".into())
            ),
        ]
    );
    assert_eq!(rows[1].0, None);
    assert_eq!(
        rows[1].1[1],
        ("lastname".to_string(), Value::String("Turing, A.".into()))
    );
}

#[test]
fn csv_errors_name_the_row_and_column() {
    let entity = contact();
    let error = parse_csv(&entity, "firstname,shoesize\nAda,9\n").expect_err("unknown column");
    assert!(error.message.contains("row 1") && error.message.contains("shoesize"));
    let error = parse_csv(
        &entity,
        "firstname,birthdate\nAda,1815-12-10\nAlan,tomorrow\n",
    )
    .expect_err("bad date");
    assert!(
        error.message.contains("row 3") && error.message.contains("birthdate"),
        "{}",
        error.message
    );
    let error = parse_csv(&entity, "firstname,lastname\nAda\n").expect_err("short row");
    assert!(error.message.contains("row 2"), "{}", error.message);
    let error = parse_csv(&entity, "createdon\n2020-01-01\n").expect_err("read-only");
    assert!(error.message.contains("kept by the platform"));
    let error = parse_csv(&entity, "firstname,firstname\nA,B\n").expect_err("twice");
    assert!(error.message.contains("twice"));
    assert!(parse_csv(&entity, "").is_err());
}

#[test]
fn export_columns_put_the_key_first_and_follow_select() {
    let entity = contact();
    let select = vec!["lastname".to_string(), "firstname".to_string()];
    let names: Vec<&str> = export_columns(&entity, Some(&select))
        .iter()
        .map(|a| a.logical_name.as_str())
        .collect();
    assert_eq!(names, ["contactid", "firstname", "lastname"]);
    assert_eq!(export_columns(&entity, None).len(), entity.attributes.len());
}
