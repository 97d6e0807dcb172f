//! Aggregates (`GET accounts?$apply=…`, OData's data aggregation as Dataverse answers it, and
//! FetchXML's `aggregate='true'`): computed from the records the query reads, and recorded as
//! the list of those records — an aggregate shows what they hold. And entities' record counts
//! (`RetrieveTotalRecordCount`), recorded as counts are.

use std::collections::BTreeSet;

use reqwest::blocking::Response;
use serde_json::{Value, json};

use crate::common::*;

const FORMATTED: &str = "@OData.Community.Display.V1.FormattedValue";

fn aggregate(server: &Server, token: &str, apply: &str, extra: &[(&str, &str)]) -> Response {
    let mut query = vec![("$apply", apply)];
    query.extend_from_slice(extra);
    send(
        client()
            .get(server.api("accounts"))
            .query(&query)
            .header("Prefer", "odata.include-annotations=\"*\""),
        token,
        None,
    )
}

fn answer(server: &Server, token: &str, apply: &str, extra: &[(&str, &str)]) -> (Value, String) {
    let response = aggregate(server, token, apply, extra);
    assert_eq!(response.status(), 200, "{apply}");
    let correlation = correlation_of(&response);
    (response.json().unwrap(), correlation)
}

#[test]
fn aggregates_answer_from_the_records_they_read_and_the_event_lists_every_one() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.audit_reads_of(&admin, &["account", "contact"]);
    let made = send(
        client().post(server.api("contacts")),
        &admin,
        Some(json!({"firstname": "Ada", "lastname": "Lovelace"})),
    );
    let ada = entity_id(&made);
    let mut ids = std::collections::BTreeMap::new();
    for (name, revenue, industry, employees) in [
        ("Contoso", json!(0.1), json!(1), json!(10)),
        ("contoso", json!(0.2), json!(1), json!(3)),
        ("Fabrikam", json!(1_000_000), json!(2), json!(null)),
        ("Litware", json!(5), json!(null), json!(7)),
        ("Tailspin", json!(null), json!(2), json!(7)),
    ] {
        let mut body = json!({"name": name, "revenue": revenue, "industrycode": industry,
                              "numberofemployees": employees});
        if name == "Litware" {
            body["primarycontactid@odata.bind"] = json!(format!("/contacts({ada})"));
        }
        let made = send(client().post(server.api("accounts")), &admin, Some(body));
        assert_eq!(made.status(), 204);
        ids.insert(name, entity_id(&made));
    }

    // Grouped by a choice, sums, averages, counts and distinct values, each group's values
    // shown as a person reads them.
    let (page, correlation) = answer(
        &server,
        &admin,
        "filter(name ne 'Tailspin')/groupby((industrycode),aggregate(revenue with sum as total,revenue with average as mean,numberofemployees with max as most,name with countdistinct as names,$count as count))",
        &[],
    );
    let rows = page["value"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{page}");
    assert!(
        page["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("$metadata#accounts")
    );
    // No value first, then by the choice's value.
    assert_eq!(rows[0]["industrycode"], Value::Null);
    assert_eq!(rows[0]["total"], 5.0);
    assert_eq!(rows[0]["count"], 1);
    assert_eq!(rows[1]["industrycode"], 1);
    assert_eq!(rows[1][format!("industrycode{FORMATTED}")], "Accounting");
    assert_eq!(
        rows[1]["total"], 0.3,
        "a decimal sum, not a binary one: {page}"
    );
    assert_eq!(rows[1]["mean"], 0.15);
    assert_eq!(rows[1]["most"], 10);
    assert_eq!(rows[1]["names"], 1, "text is told apart without case");
    assert_eq!(rows[1]["count"], 2);
    assert_eq!(rows[1][format!("count{FORMATTED}")], "2");
    assert_eq!(rows[2]["total"], 1_000_000.0);
    assert_eq!(rows[2][format!("total{FORMATTED}")], "1,000,000.00");
    assert_eq!(rows[2]["most"], Value::Null, "no value to take the max of");
    assert!(
        rows[2].get("accountid").is_none(),
        "a group is no record: {page}"
    );

    // The event is the list's: every record whose values went into the answer, and only
    // those (Tailspin was filtered out).
    let events = events_of(&server, &admin, &correlation);
    assert_eq!(events.len(), 1, "{events:#?}");
    let event = &events[0];
    assert_eq!(event["Operation"], "RetrieveMultiple");
    assert_eq!(event["EntityName"], "account");
    assert_eq!(event["ResultStatus"], "Succeeded");
    assert_eq!(event["ResultCount"], 4);
    assert_eq!(event["Details"], json!({"Aggregate": {"Rows": 3}}));
    assert!(
        event["Query"]
            .as_str()
            .unwrap()
            .contains("$apply=filter(name ne 'Tailspin')")
    );
    let read: BTreeSet<String> = ids
        .iter()
        .filter(|(name, _)| **name != "Tailspin")
        .map(|(_, id)| id.clone())
        .collect();
    assert_eq!(record_ids(&events), read);

    // Grouped by a lookup: the record named is shown by its name, and so is recorded as seen.
    let (page, correlation) = answer(
        &server,
        &admin,
        "groupby((_primarycontactid_value),aggregate($count as n))",
        &[("$orderby", "_primarycontactid_value desc")],
    );
    let rows = page["value"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{page}");
    assert_eq!(rows[0]["_primarycontactid_value"], ada.as_str());
    assert_eq!(
        rows[0][format!("_primarycontactid_value{FORMATTED}")],
        "Ada Lovelace"
    );
    assert_eq!(rows[0]["n"], 1);
    assert_eq!(rows[1]["n"], 4);
    let events = events_of(&server, &admin, &correlation);
    let seen: Vec<&Value> = events
        .iter()
        .filter(|e| e["EntityName"] == "contact")
        .collect();
    assert_eq!(seen.len(), 1, "{events:#?}");
    assert_eq!(seen[0]["RecordIds"], json!([ada]));
    assert_eq!(seen[0]["Details"], json!({"FormattedValueOf": "account"}));

    // Without groups: one row, even of no records; the first and last creation time.
    let (page, correlation) = answer(
        &server,
        &admin,
        "filter(name eq 'nobody')/aggregate($count as n,revenue with sum as total)",
        &[],
    );
    assert_eq!(
        page["value"],
        json!([{"n": 0, format!("n{FORMATTED}"): "0", "total": null}])
    );
    let events = events_of(&server, &admin, &correlation);
    assert_eq!(events[0]["ResultCount"], 0);
    assert_eq!(record_ids(&events), BTreeSet::new());
    let (page, _) = answer(
        &server,
        &admin,
        "aggregate(createdon with min as first,createdon with max as last)",
        &[],
    );
    let row = &page["value"][0];
    assert!(
        row["first"].as_str().unwrap() <= row["last"].as_str().unwrap(),
        "{row}"
    );
    assert!(row["first"].as_str().unwrap().starts_with("20"), "{row}");

    // Only a group's values: distinct names, without case, ordered as asked.
    let (page, _) = answer(
        &server,
        &admin,
        "groupby((name))",
        &[("$orderby", "name desc")],
    );
    let names = names(&page);
    assert_eq!(names.len(), 4, "{page}");
    assert_eq!(&names[..3], ["Tailspin", "Litware", "Fabrikam"]);
    assert!(names[3].eq_ignore_ascii_case("contoso"), "{names:?}");
}

#[test]
fn what_an_aggregation_cannot_answer_is_refused_and_changes_nothing() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.audit_lists_of(&admin, "account");
    let account = create_account(&server, &admin, "Contoso");
    for (apply, extra, says) in [
        ("groupby((nosuch))", vec![], "does not exist"),
        ("groupby((createdon))", vec![], "it is DateTime"),
        ("aggregate(name with sum as s)", vec![], "it is String"),
        (
            "groupby((primarycontactid/fullname))",
            vec![],
            "related record",
        ),
        (
            "filter(revenue eq 'lots')/aggregate($count as n)",
            vec![],
            "Money",
        ),
        ("filter(name eq 'x')", vec![], "end it with groupby"),
        (
            "aggregate($count as n)",
            vec![("$select", "name")],
            "$select does not apply",
        ),
        (
            "aggregate($count as n)",
            vec![("$filter", "name eq 'x'")],
            "$filter does not apply",
        ),
        (
            "aggregate($count as n)",
            vec![("$top", "1")],
            "$top does not apply",
        ),
        (
            "aggregate($count as n)",
            vec![("savedQuery", "00000000-0000-0000-0000-000000000001")],
            "savedQuery does not apply",
        ),
        (
            "groupby((name),aggregate($count as n))",
            vec![("$orderby", "n")],
            "aggregate value",
        ),
        (
            "groupby((name),aggregate($count as name))",
            vec![],
            "names an attribute",
        ),
    ] {
        let (status, code, message) = odata_error(aggregate(&server, &admin, apply, &extra));
        assert_eq!(
            (status, code.as_str()),
            (400, "BadRequest"),
            "{apply}: {message}"
        );
        assert!(message.contains(says), "{apply}: {message}");
    }
    // Not on one record, nor on a record's related records.
    let one = send(
        client()
            .get(server.api(&format!("accounts({account})")))
            .query(&[("$apply", "aggregate($count as n)")]),
        &admin,
        None,
    );
    assert_eq!(odata_error(one).0, 400);
    let counted = send(
        client()
            .get(server.api("accounts/$count"))
            .query(&[("$apply", "filter(name eq 'nobody')/aggregate($count as n)")]),
        &admin,
        None,
    );
    let (status, _, message) = odata_error(counted);
    assert_eq!(
        status, 400,
        "a count that would ignore the filter it was given"
    );
    assert!(
        message.contains("$apply does not apply to $count"),
        "{message}"
    );
    let related = send(
        client()
            .get(server.api(&format!("accounts({account})/contact_parentcustomerid")))
            .query(&[("$apply", "aggregate($count as n)")]),
        &admin,
        None,
    );
    let (status, _, message) = odata_error(related);
    assert_eq!(status, 400);
    assert!(message.contains("not a record's related ones"), "{message}");
    // Every refusal recorded as failed, none listing a record.
    let failed = server.audit(&admin, "operation=RetrieveMultiple&entity=account");
    assert_eq!(failed.len(), 13, "{failed:#?}");
    assert!(
        failed.iter().all(|e| e["ResultStatus"] != "Succeeded"),
        "{failed:#?}"
    );
    assert!(record_ids(&failed).is_empty());

    // Reading needs Read: a user without it is denied, and that is recorded.
    let writer = server.user_holding(
        &admin,
        "writer@contoso.test",
        "Writers",
        &["prvWriteAccount"],
    );
    let denied = aggregate(&server, &writer, "aggregate($count as n)", &[]);
    let correlation = correlation_of(&denied);
    assert_eq!(odata_error(denied).0, 403);
    let events = events_of(&server, &admin, &correlation);
    assert_eq!(events[0]["ResultStatus"], "Denied", "{events:#?}");

    // More records than an aggregation reads (Dataverse's 50,000): refused, not answered in
    // part, and no record listed as seen.
    let mut csv = String::from("name,revenue\n");
    for i in 0..50_000 {
        csv.push_str(&format!("N{i},{i}\n"));
    }
    let imported = send(
        client().post(server.api("ImportRecords")),
        &admin,
        Some(json!({"EntitySetName": "accounts", "Content": csv})),
    );
    assert_eq!(imported.status(), 200);
    let over = aggregate(&server, &admin, "aggregate($count as n)", &[]);
    let correlation = correlation_of(&over);
    let (status, _, message) = odata_error(over);
    assert_eq!(status, 400);
    assert!(message.contains("AggregateQueryRecordLimit"), "{message}");
    let events = events_of(&server, &admin, &correlation);
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["ResultStatus"], "Failed");
    assert!(record_ids(&events).is_empty());
    // Filtered to fewer, it is answered.
    let (page, _) = answer(
        &server,
        &admin,
        "filter(revenue lt 10)/aggregate($count as n,revenue with sum as s)",
        &[],
    );
    assert_eq!(page["value"][0]["n"], 10);
    assert_eq!(page["value"][0]["s"], 45.0);
}

#[test]
fn a_fetchxml_aggregate_is_the_same_aggregation_and_lists_the_records_of_the_rows_shown() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.audit_lists_of(&admin, "account");
    let mut by_industry: std::collections::BTreeMap<i64, BTreeSet<String>> = Default::default();
    for (name, revenue, industry) in [
        ("A", 10, 1),
        ("B", 20, 1),
        ("C", 1_000, 2),
        ("D", 1, 3),
        ("E", 2, 3),
        ("F", 3, 3),
    ] {
        let made = send(
            client().post(server.api("accounts")),
            &admin,
            Some(json!({"name": name, "revenue": revenue, "industrycode": industry})),
        );
        by_industry
            .entry(industry)
            .or_default()
            .insert(entity_id(&made));
    }
    let fetch = "<fetch aggregate='true' top='2'><entity name='account'>
           <attribute name='industrycode' alias='industry' groupby='true'/>
           <attribute name='revenue' alias='total' aggregate='sum'/>
           <attribute name='accountid' alias='accounts' aggregate='count'/>
           <attribute name='telephone1' alias='phones' aggregate='countcolumn'/>
           <attribute name='numberofemployees' alias='most' aggregate='max'/>
           <filter><condition attribute='name' operator='ne' value='F'/></filter>
           <order alias='total' descending='true'/>
         </entity></fetch>";
    let response = send(
        client()
            .get(server.api("accounts"))
            .query(&[("fetchXml", fetch)])
            .header("Prefer", "odata.include-annotations=\"*\""),
        &admin,
        None,
    );
    assert_eq!(response.status(), 200);
    let correlation = correlation_of(&response);
    let page: Value = response.json().unwrap();
    // By the sum, greatest first, the first two rows; empty values left out, as FetchXML's.
    assert_eq!(
        page["value"],
        json!([
            {"industry": 2, format!("industry{FORMATTED}"): "Agriculture and Non-petrol Natural Resource Extraction",
             "total": 1000.0, format!("total{FORMATTED}"): "1,000.00",
             "accounts": 1, format!("accounts{FORMATTED}"): "1",
             "phones": 0, format!("phones{FORMATTED}"): "0"},
            {"industry": 1, format!("industry{FORMATTED}"): "Accounting",
             "total": 30.0, format!("total{FORMATTED}"): "30.00",
             "accounts": 2, format!("accounts{FORMATTED}"): "2",
             "phones": 0, format!("phones{FORMATTED}"): "0"},
        ]),
        "{page}"
    );
    // The event lists the records of the two rows answered, not those of the row `top` left
    // out (industry 3), nor the one the filter left out.
    let events = events_of(&server, &admin, &correlation);
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["Operation"], "RetrieveMultiple");
    assert_eq!(events[0]["Details"], json!({"Aggregate": {"Rows": 2}}));
    let shown: BTreeSet<String> = by_industry[&1].union(&by_industry[&2]).cloned().collect();
    assert_eq!(record_ids(&events), shown);
    assert_eq!(events[0]["ResultCount"], 3);

    // Paging an aggregate is refused, as is an attribute neither grouped nor aggregated.
    for xml in [
        "<fetch aggregate='true' count='1'><entity name='account'><attribute name='revenue' alias='t' aggregate='sum'/></entity></fetch>",
        "<fetch aggregate='true'><entity name='account'><attribute name='revenue' alias='t'/></entity></fetch>",
    ] {
        let refused = send(
            client()
                .get(server.api("accounts"))
                .query(&[("fetchXml", xml)]),
            &admin,
            None,
        );
        assert_eq!(odata_error(refused).0, 400, "{xml}");
    }
}

/// `RetrieveTotalRecordCount` (Dataverse's function): each entity's count read and recorded as
/// `set/$count` is, after the caller is found to read every entity named.
#[test]
fn total_record_counts_are_read_and_recorded_as_a_count_is() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.audit_lists_of(&admin, "account");
    create_account(&server, &admin, "One");
    create_account(&server, &admin, "Two");
    let made = send(
        client().post(server.api("contacts")),
        &admin,
        Some(json!({"lastname": "Lovelace"})),
    );
    assert_eq!(made.status(), 204);

    let counted = send(
        client().get(server.api("RetrieveTotalRecordCount(EntityNames=['account','contact'])")),
        &admin,
        None,
    );
    assert_eq!(counted.status(), 200);
    let correlation = correlation_of(&counted);
    let answer: Value = counted.json().unwrap();
    assert_eq!(
        answer["EntityRecordCountCollection"],
        json!({"Count": 2, "IsReadOnly": false, "Keys": ["account", "contact"], "Values": [2, 1]})
    );
    // Accounts' lists are audited, contacts' are not: one event, the count and no record.
    let events = events_of(&server, &admin, &correlation);
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["Operation"], "RetrieveMultiple");
    assert_eq!(events[0]["EntityName"], "account");
    assert_eq!(events[0]["ResultCount"], 2);
    assert_eq!(events[0]["RecordIds"], json!([]));

    // The names through a parameter alias, written as JSON.
    let aliased = send(
        client()
            .get(server.api("RetrieveTotalRecordCount(EntityNames=@p1)"))
            .query(&[("@p1", "[\"contact\"]")]),
        &admin,
        None,
    );
    assert_eq!(aliased.status(), 200);
    let answer: Value = aliased.json().unwrap();
    assert_eq!(answer["EntityRecordCountCollection"]["Values"], json!([1]));

    // One entity the caller may not read refuses the whole call, recorded on that entity,
    // and nothing is counted.
    let reader = server.user_holding(
        &admin,
        "reader@contoso.test",
        "Readers",
        &["prvReadAccount"],
    );
    let refused = send(
        client().get(server.api("RetrieveTotalRecordCount(EntityNames=['account','contact'])")),
        &reader,
        None,
    );
    let correlation = correlation_of(&refused);
    assert_eq!(odata_error(refused).0, 403);
    let events = events_of(&server, &admin, &correlation);
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["ResultStatus"], "Denied");
    assert_eq!(events[0]["EntityName"], "contact");

    for names in ["['nosuch']", "[]", "['account','account']", "account"] {
        let bad = send(
            client().get(server.api(&format!("RetrieveTotalRecordCount(EntityNames={names})"))),
            &admin,
            None,
        );
        assert_eq!(odata_error(bad).0, 400, "{names}");
    }
}
