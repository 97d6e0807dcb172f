//! FetchXML queries (Dataverse's `?fetchXml=`): read as the OData query that says the same,
//! paged by `count`, `page` and the paging cookie as Dataverse pages them, every page a
//! `RetrieveMultiple` event listing exactly the records it showed.

use serde_json::{Value, json};

use crate::common::*;

fn fetch_page(server: &Server, token: &str, xml: &str) -> (Value, Vec<Value>) {
    let response = send(
        client()
            .get(server.api("accounts"))
            .query(&[("fetchXml", xml)]),
        token,
        None,
    );
    assert_eq!(response.status(), 200, "{xml}");
    let correlation = correlation_of(&response);
    let page: Value = response.json().unwrap();
    (page, events_of(server, token, &correlation))
}

fn page_ids(page: &Value) -> std::collections::BTreeSet<String> {
    page["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["accountid"].as_str().unwrap().to_string())
        .collect()
}

/// The paging cookie of a page's `@Microsoft.Dynamics.CRM.fetchxmlpagingcookie`, decoded
/// twice as a client decodes it, and escaped for the `paging-cookie` attribute.
fn cookie_of(page: &Value) -> String {
    let annotation = page["@Microsoft.Dynamics.CRM.fetchxmlpagingcookie"]
        .as_str()
        .unwrap();
    let encoded = annotation
        .split("pagingcookie=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap();
    let decode = |text: &str| {
        reqwest::Url::parse(&format!("http://x/?c={text}"))
            .unwrap()
            .query_pairs()
            .next()
            .unwrap()
            .1
            .into_owned()
    };
    decode(&decode(encoded))
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn query(page: u64, cookie: Option<&str>) -> String {
    let cookie = cookie.map_or(String::new(), |c| format!(" paging-cookie=\"{c}\""));
    format!(
        "<fetch mapping='logical' count='3' page='{page}' returntotalrecordcount='true'{cookie}>
           <entity name='account'>
             <attribute name='name'/><attribute name='numberofemployees'/><attribute name='telephone1'/>
             <filter type='and'>
               <condition attribute='name' operator='like' value='Fx %'/>
               <condition attribute='createdon' operator='last-x-days' value='1'/>
             </filter>
             <order attribute='numberofemployees' descending='false'/>
           </entity>
         </fetch>"
    )
}

#[test]
fn a_fetch_pages_by_cookie_and_by_number_and_each_page_is_recorded() {
    let server = Server::start(&[]);
    let admin = server.admin();
    server.audit_lists_of(&admin, "account");
    for (name, employees) in [
        ("Fx 5", 5),
        ("Fx 2", 2),
        ("Other", 9),
        ("Fx 7", 7),
        ("Fx 1", 1),
        ("Fx 4", 4),
        ("Fx 6", 6),
        ("Fx 3", 3),
    ] {
        let made = send(
            client().post(server.api("accounts")),
            &admin,
            Some(json!({"name": name, "numberofemployees": employees})),
        );
        assert_eq!(made.status(), 204);
    }

    let (first, events) = fetch_page(&server, &admin, &query(1, None));
    assert_eq!(names(&first), ["Fx 1", "Fx 2", "Fx 3"]);
    assert_eq!(first["@Microsoft.Dynamics.CRM.totalrecordcount"], 7);
    assert_eq!(first["@Microsoft.Dynamics.CRM.morerecords"], true);
    assert!(first.get("@odata.nextLink").is_none(), "{first}");
    // FetchXML leaves out what is empty.
    assert!(first["value"][0].get("telephone1").is_none(), "{first}");
    assert_eq!(first["value"][0]["numberofemployees"], 1);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["Operation"], "RetrieveMultiple");
    assert!(
        events[0]["Query"]
            .as_str()
            .unwrap()
            .contains("fetchXml=<fetch"),
        "{events:?}"
    );
    assert_eq!(record_ids(&events), page_ids(&first));

    // The next page by the cookie, as a client pages: `page` up by one, the cookie sent back.
    let cookie = cookie_of(&first);
    let (second, events) = fetch_page(&server, &admin, &query(2, Some(&cookie)));
    assert_eq!(names(&second), ["Fx 4", "Fx 5", "Fx 6"]);
    assert_eq!(record_ids(&events), page_ids(&second));
    let (third, events) = fetch_page(&server, &admin, &query(3, Some(&cookie_of(&second))));
    assert_eq!(names(&third), ["Fx 7"]);
    assert_eq!(third["@Microsoft.Dynamics.CRM.morerecords"], false);
    assert!(
        third
            .get("@Microsoft.Dynamics.CRM.fetchxmlpagingcookie")
            .is_none()
    );
    assert_eq!(record_ids(&events), page_ids(&third));

    // By number alone: the records before the page are passed over, not shown, and the event
    // lists only the page's.
    let (by_number, events) = fetch_page(&server, &admin, &query(2, None));
    assert_eq!(names(&by_number), ["Fx 4", "Fx 5", "Fx 6"]);
    assert_eq!(record_ids(&events), page_ids(&by_number));
    let (beyond, _) = fetch_page(&server, &admin, &query(4, None));
    assert_eq!(beyond["value"], json!([]));
    assert_eq!(beyond["@Microsoft.Dynamics.CRM.morerecords"], false);

    // The caller's own records (`eq-userid`), `in` and `not-null` read as the query functions.
    let (mine, _) = fetch_page(
        &server,
        &admin,
        "<fetch top='2'><entity name='account'><attribute name='name'/><filter>
           <condition attribute='ownerid' operator='eq-userid'/>
           <condition attribute='numberofemployees' operator='in'><value>9</value><value>3</value></condition>
           <condition attribute='name' operator='not-null'/>
         </filter><order attribute='name'/></entity></fetch>",
    );
    assert_eq!(names(&mine), ["Fx 3", "Other"]);
}
