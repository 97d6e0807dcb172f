//! The canonical audit record (SPEC §5) and the catalogue of operations Custos records.
//!
//! Field values are plain Rust data; JSON for the API is rendered by the server by hand, and the
//! on-disk bytes are produced by `codec`, so no serde attribute can change either.

use uuid::Uuid;

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Unique and time-ordered (UUIDv7).
    pub id: Uuid,
    /// Microseconds since the Unix epoch, UTC.
    pub creation_time_us: i64,
    /// The tenant the event belongs to.
    pub tenant_id: Uuid,
    /// Instance unique name; empty for tenant-level events.
    pub instance: String,
    /// The instance's service URL.
    pub instance_url: String,
    /// `Custos` for our own events; the application's name for ingested ones.
    pub workload: String,
    /// Coarse class of the event.
    pub record_type: String,
    /// The message, e.g. `RetrieveMultiple`.
    pub operation: String,
    /// The report bucket (SPEC §7) the event falls in; empty when none.
    pub category: String,
    /// The acting user's id; empty when the caller could not be identified.
    pub user_id: String,
    /// The acting user's principal name.
    pub user_upn: String,
    /// Microsoft 365 user type.
    pub user_type: UserType,
    /// The real caller when acting on behalf of another user.
    pub caller_id: String,
    /// Client IP address as seen by the server.
    pub client_ip: String,
    /// The client's user agent.
    pub user_agent: String,
    /// Which door the request came through.
    pub origin: Origin,
    /// Ties the events of one request together.
    pub correlation_id: String,
    /// Ties the events of one sign-in session together.
    pub session_id: String,
    /// The client's own request id (`x-ms-client-request-id`).
    pub client_request_id: String,
    /// Outcome.
    pub result_status: ResultStatus,
    /// Machine-readable reason for a failure or denial; empty on success.
    pub error_code: String,
    /// The entity touched; empty when none.
    pub entity_name: String,
    /// Category of that entity.
    pub entity_category: EntityCategory,
    /// Every record touched or seen.
    pub record_ids: Vec<Uuid>,
    /// The query or view that produced the records.
    pub query: String,
    /// Number of records returned or affected.
    pub result_count: u64,
    /// Attribute changes with old and new values as JSON text.
    pub changes: Vec<Change>,
    /// Operation-specific JSON text for admin and support events; empty when none.
    pub details: String,
}

/// One attribute's change; values are JSON text, `None` when absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Attribute logical name.
    pub attribute: String,
    /// Value before the operation.
    pub old: Option<String>,
    /// Value after the operation.
    pub new: Option<String>,
}

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = ($code:expr, $text:expr)),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vmeta])* $variant),* }

        impl $name {
            /// Every value, in code order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The stable one-byte code used on disk.
            pub fn code(self) -> u8 {
                match self { $($name::$variant => $code),* }
            }

            /// The value for an on-disk code.
            pub fn from_code(code: u8) -> Option<$name> {
                match code { $($code => Some($name::$variant),)* _ => None }
            }

            /// The name used in JSON and in search filters.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }

            /// Parses the JSON name, ignoring ASCII case.
            pub fn parse(text: &str) -> Option<$name> {
                $name::ALL.iter().copied().find(|v| v.as_str().eq_ignore_ascii_case(text))
            }
        }
    };
}

string_enum! {
    /// User types as in the Microsoft 365 audit schema.
    UserType {
        /// A business user.
        Regular = (0, "Regular"),
        /// A tenant or instance administrator.
        Admin = (2, "Admin"),
        /// A support engineer of the service operator.
        DcAdmin = (3, "DcAdmin"),
        /// The system itself.
        System = (4, "System"),
        /// An application user.
        Application = (5, "Application"),
        /// A service principal.
        ServicePrincipal = (6, "ServicePrincipal"),
    }
}

string_enum! {
    /// Where a request came from.
    Origin {
        /// The console.
        WebUI = (0, "WebUI"),
        /// SDK calls and custom applications.
        Api = (1, "Api"),
        /// Export to Excel or csv.
        Export = (2, "Export"),
        /// The internal management tool.
        SupportTool = (3, "SupportTool"),
        /// Backend commands.
        Backend = (4, "Backend"),
        /// The admin center.
        AdminCenter = (5, "AdminCenter"),
        /// Events sent by other applications.
        Ingest = (6, "Ingest"),
    }
}

string_enum! {
    /// Outcome of the audited request.
    ResultStatus {
        /// Done.
        Succeeded = (0, "Succeeded"),
        /// Tried and failed (bad input, missing record, fault).
        Failed = (1, "Failed"),
        /// Refused: not authenticated or not allowed.
        Denied = (2, "Denied"),
    }
}

string_enum! {
    /// Entity categories; they drive the reports (SPEC §3).
    EntityCategory {
        /// No entity is involved.
        None = (0, ""),
        /// Seeded standard entities (account, contact…).
        OutOfBox = (1, "out_of_box"),
        /// Entities created by customization.
        Custom = (2, "custom"),
        /// Entities about the platform itself.
        Admin = (3, "admin"),
        /// Everything else.
        Other = (4, "other"),
    }
}

string_enum! {
    /// Report buckets of SPEC §7; the JSON names are the report ids.
    Category {
        /// No report bucket.
        None = (0, ""),
        /// Accessed out-of-box entity.
        OutOfBoxEntity = (1, "accessed-out-of-box-entity"),
        /// Accessed custom entity.
        CustomEntity = (2, "accessed-custom-entity"),
        /// Accessed admin entity.
        AdminEntity = (3, "accessed-admin-entity"),
        /// Performed bulk actions.
        BulkActions = (4, "performed-bulk-actions"),
        /// Accessed other entity type.
        OtherEntity = (5, "accessed-other-entity-type"),
        /// Accessed admin center.
        AdminCenter = (6, "accessed-admin-center"),
        /// Accessed internal management tool.
        InternalTool = (7, "accessed-internal-management-tool"),
        /// Signed in or out.
        SignInOut = (8, "signed-in-or-out"),
        /// Activated process or plug-in.
        ProcessOrPlugin = (9, "activated-process-or-plugin"),
    }
}

string_enum! {
    /// Coarse class of a Custos event.
    RecordType {
        /// Work on records.
        Entity = (0, "CustosEntity"),
        /// Configuration and administration.
        Admin = (1, "CustosAdmin"),
        /// Sign-in, sign-out and access.
        Access = (2, "CustosAccess"),
        /// Support engineers and backend commands.
        Support = (3, "CustosSupport"),
    }
}

string_enum! {
    /// The catalogue of operations Custos itself records; ingested events carry their own names.
    Operation {
        /// A record was created.
        Create = (0, "Create"),
        /// One record was read.
        Retrieve = (1, "Retrieve"),
        /// A page of records was read (view, grid, API query).
        RetrieveMultiple = (2, "RetrieveMultiple"),
        /// A record was changed.
        Update = (3, "Update"),
        /// A record was deleted.
        Delete = (4, "Delete"),
        /// A record was created or changed by upsert.
        Upsert = (5, "Upsert"),
        /// Records were exported.
        ExportToExcel = (6, "ExportToExcel"),
        /// Records were deleted by query.
        BulkDelete = (7, "BulkDelete"),
        /// Records were imported.
        ImportRecords = (8, "ImportRecords"),
        /// Customizations were published.
        PublishAllCustomizations = (9, "PublishAllCustomizations"),
        /// An attribute and its data were deleted.
        DeleteAttribute = (10, "DeleteAttribute"),
        /// A user was created.
        CreateUser = (11, "CreateUser"),
        /// A member joined a team.
        AddTeamMember = (12, "AddTeamMember"),
        /// A security role was assigned.
        AssignRole = (13, "AssignRole"),
        /// A solution was imported.
        ImportSolution = (14, "ImportSolution"),
        /// An instance was backed up.
        BackupInstance = (15, "BackupInstance"),
        /// An instance was restored.
        RestoreInstance = (16, "RestoreInstance"),
        /// An instance was created.
        CreateInstance = (17, "CreateInstance"),
        /// An instance was deleted.
        DeleteInstance = (18, "DeleteInstance"),
        /// A trial instance became paid.
        ConvertTrialToPaid = (19, "ConvertTrialToPaid"),
        /// A process was activated.
        ActivateProcess = (20, "ActivateProcess"),
        /// A plug-in step was activated.
        ActivatePlugin = (21, "ActivatePlugin"),
        /// A user signed in.
        SignIn = (22, "SignIn"),
        /// A user signed out.
        SignOut = (23, "SignOut"),
        /// Audit settings changed (instance, entity or attribute level).
        UpdateAuditSettings = (24, "UpdateAuditSettings"),
        /// A retention setting changed.
        SetRetention = (25, "SetRetention"),
        /// The admin center was used.
        AccessAdminCenter = (26, "AccessAdminCenter"),
        /// The internal management tool was used.
        AccessInternalTool = (27, "AccessInternalTool"),
        /// A backend command ran.
        BackendCommand = (28, "BackendCommand"),
        /// A request that could not be mapped to any operation above.
        Request = (29, "Request"),
        /// The audit log was searched or a record of it read.
        SearchAuditLog = (30, "SearchAuditLog"),
        /// Retention deleted a whole partition of expired events.
        PurgeAuditLog = (31, "PurgeAuditLog"),
        /// Audit events were exported (CSV, xlsx, JSON lines).
        ExportAuditLog = (32, "ExportAuditLog"),
        /// Audit log search was turned on or off.
        SetAuditLogSearch = (33, "SetAuditLogSearch"),
        /// A custom audit report was saved (created or changed).
        SaveAuditReport = (34, "SaveAuditReport"),
        /// A custom audit report was deleted.
        DeleteAuditReport = (35, "DeleteAuditReport"),
        /// An alert rule was saved (created or changed).
        SaveAlertRule = (36, "SaveAlertRule"),
        /// An alert rule was deleted.
        DeleteAlertRule = (37, "DeleteAlertRule"),
        /// An alert rule matched: the alert itself.
        AlertTriggered = (38, "AlertTriggered"),
        /// A verification of the whole log was started.
        VerifyAuditLog = (39, "VerifyAuditLog"),
        /// A custom entity was created (a draft until published).
        CreateEntity = (40, "CreateEntity"),
        /// A custom attribute was created (a draft until published).
        CreateAttribute = (41, "CreateAttribute"),
        /// A security role was taken from a user or team.
        RemoveRole = (42, "RemoveRole"),
        /// A member left a team.
        RemoveTeamMember = (43, "RemoveTeamMember"),
        /// Privileges were added to a custom security role.
        AddPrivilegesRole = (44, "AddPrivilegesRole"),
        /// A custom security role's privileges were replaced.
        ReplacePrivilegesRole = (45, "ReplacePrivilegesRole"),
        /// A privilege was taken from a custom security role.
        RemovePrivilegeRole = (46, "RemovePrivilegeRole"),
        /// Another application posted audit events (recorded for refused posts; accepted
        /// events are the record).
        IngestAuditEvents = (47, "IngestAuditEvents"),
        /// An active process ran on a record event (set a field, or called its webhook).
        RunProcess = (48, "RunProcess"),
        /// A plug-in step ran on a message: its webhook was called with the record.
        RunPlugin = (49, "RunPlugin"),
        /// A process was deactivated.
        DeactivateProcess = (50, "DeactivateProcess"),
        /// A plug-in step was deactivated.
        DeactivatePlugin = (51, "DeactivatePlugin"),
        /// A solution was removed with its components.
        RemoveSolution = (52, "RemoveSolution"),
        /// A custom entity was deleted with its records.
        DeleteEntity = (53, "DeleteEntity"),
        /// A tenant global admin let a support engineer in (Customer Lockbox style).
        GrantSupportAccess = (54, "GrantSupportAccess"),
        /// A support engineer's access was taken back.
        RevokeSupportAccess = (55, "RevokeSupportAccess"),
        /// A user reached an instance from the web (console), recorded once per interval.
        UserAccessViaWeb = (56, "UserAccessViaWeb"),
        /// A user or application reached an instance through the Web API (SDK), recorded once
        /// per interval.
        UserAccessViaSdk = (57, "UserAccessViaSdk"),
        /// A record's owner was changed.
        Assign = (58, "Assign"),
        /// A record was shared with a user.
        Share = (59, "Share"),
        /// A record's share was taken back.
        Unshare = (60, "Unshare"),
        /// A subscription to the activity feed was started (or its webhook changed).
        StartFeedSubscription = (61, "StartFeedSubscription"),
        /// The activity feed's subscription was stopped.
        StopFeedSubscription = (62, "StopFeedSubscription"),
        /// The activity feed was read: subscriptions, a content listing or a content blob.
        ReadActivityFeed = (63, "ReadActivityFeed"),
        /// A stream of the log to a SIEM was set.
        SaveAuditStream = (64, "SaveAuditStream"),
        /// A stream of the log to a SIEM was deleted.
        DeleteAuditStream = (65, "DeleteAuditStream"),
        /// The key that signs the log's checkpoints was rotated (a handover checkpoint).
        RotateCheckpointKey = (66, "RotateCheckpointKey"),
        /// A user was disabled: their sign-in and every session of theirs refused.
        DisableUser = (67, "DisableUser"),
        /// A disabled user was enabled again.
        EnableUser = (68, "EnableUser"),
        /// A user was deleted with every role and team membership they held.
        DeleteUser = (69, "DeleteUser"),
        /// An admin set a user's password; every session of the user ended.
        ResetPassword = (70, "ResetPassword"),
        /// A user changed their own password; every session of theirs ended.
        ChangePassword = (71, "ChangePassword"),
        /// A tenant global admin opened a support engineer's access to an instance for a
        /// ticket (Customer Lockbox style).
        ApproveSupportAccess = (72, "ApproveSupportAccess"),
        /// A support engineer's access for a ticket was closed before it expired.
        EndSupportAccess = (73, "EndSupportAccess"),
        /// The file of an audit export job was downloaded.
        DownloadAuditExport = (74, "DownloadAuditExport"),
        /// An alternate key was added to an entity (a draft until published).
        CreateEntityKey = (75, "CreateEntityKey"),
        /// An alternate key was taken from an entity (a draft until published).
        DeleteEntityKey = (76, "DeleteEntityKey"),
        /// A record's change history was read (Dataverse's `RetrieveRecordChangeHistory`,
        /// the record form's Audit History).
        RetrieveRecordChangeHistory = (77, "RetrieveRecordChangeHistory"),
        /// The rights a record's share gives a user were replaced (Dataverse's `ModifyAccess`,
        /// its audit action 48, "Modify Share").
        ModifyShare = (78, "ModifyShare"),
    }
}

impl Operation {
    /// The record type of events of this operation.
    pub fn record_type(self) -> RecordType {
        use Operation::*;
        match self {
            Create
            | Retrieve
            | RetrieveMultiple
            | Update
            | Delete
            | Upsert
            | ExportToExcel
            | BulkDelete
            | ImportRecords
            | Request
            | RunProcess
            | RunPlugin
            | Assign
            | Share
            | ModifyShare
            | Unshare
            | RetrieveRecordChangeHistory => RecordType::Entity,
            SignIn | SignOut | UserAccessViaWeb | UserAccessViaSdk => RecordType::Access,
            AccessInternalTool | BackendCommand => RecordType::Support,
            PublishAllCustomizations
            | DeleteAttribute
            | CreateUser
            | AddTeamMember
            | AssignRole
            | ImportSolution
            | BackupInstance
            | RestoreInstance
            | CreateInstance
            | DeleteInstance
            | ConvertTrialToPaid
            | ActivateProcess
            | ActivatePlugin
            | DeactivateProcess
            | DeactivatePlugin
            | RemoveSolution
            | DeleteEntity
            | GrantSupportAccess
            | RevokeSupportAccess
            | UpdateAuditSettings
            | SetRetention
            | AccessAdminCenter
            | SearchAuditLog
            | ExportAuditLog
            | SetAuditLogSearch
            | SaveAuditReport
            | DeleteAuditReport
            | SaveAlertRule
            | DeleteAlertRule
            | AlertTriggered
            | VerifyAuditLog
            | CreateEntity
            | CreateAttribute
            | CreateEntityKey
            | DeleteEntityKey
            | RemoveRole
            | RemoveTeamMember
            | AddPrivilegesRole
            | ReplacePrivilegesRole
            | RemovePrivilegeRole
            | IngestAuditEvents
            | StartFeedSubscription
            | StopFeedSubscription
            | ReadActivityFeed
            | SaveAuditStream
            | DeleteAuditStream
            | RotateCheckpointKey
            | DisableUser
            | EnableUser
            | DeleteUser
            | ResetPassword
            | ChangePassword
            | ApproveSupportAccess
            | EndSupportAccess
            | DownloadAuditExport
            | PurgeAuditLog => RecordType::Admin,
        }
    }

    /// The report bucket of an event of this operation on an entity of `entity`.
    pub fn category(self, entity: EntityCategory) -> Category {
        use Operation::*;
        match self {
            BulkDelete | ImportRecords => Category::BulkActions,
            SignIn | SignOut | UserAccessViaWeb | UserAccessViaSdk => Category::SignInOut,
            ActivateProcess | ActivatePlugin | DeactivateProcess | DeactivatePlugin => {
                Category::ProcessOrPlugin
            }
            AccessAdminCenter | CreateInstance | DeleteInstance | ConvertTrialToPaid
            | BackupInstance | RestoreInstance | GrantSupportAccess | RevokeSupportAccess
            | ApproveSupportAccess | EndSupportAccess => Category::AdminCenter,
            AccessInternalTool | BackendCommand => Category::InternalTool,
            _ => match entity {
                EntityCategory::None => Category::None,
                EntityCategory::OutOfBox => Category::OutOfBoxEntity,
                EntityCategory::Custom => Category::CustomEntity,
                EntityCategory::Admin => Category::AdminEntity,
                EntityCategory::Other => Category::OtherEntity,
            },
        }
    }
}

/// An event for tests: one user's `RetrieveMultiple` of `n_ids` accounts, with one change.
#[cfg(test)]
pub(crate) fn sample_event(n_ids: usize) -> AuditEvent {
    AuditEvent {
        id: Uuid::now_v7(),
        creation_time_us: 1_700_000_000_123_456,
        tenant_id: Uuid::from_u128(7),
        instance: "main".into(),
        instance_url: "http://127.0.0.1:8080/main".into(),
        workload: "Custos".into(),
        record_type: "CustosEntity".into(),
        operation: "RetrieveMultiple".into(),
        category: "accessed-out-of-box-entity".into(),
        user_id: Uuid::from_u128(9).to_string(),
        user_upn: "ana@example.com".into(),
        user_type: UserType::Regular,
        caller_id: String::new(),
        client_ip: "127.0.0.1".into(),
        user_agent: "curl/8".into(),
        origin: Origin::Api,
        correlation_id: "c".into(),
        session_id: "s".into(),
        client_request_id: String::new(),
        result_status: ResultStatus::Succeeded,
        error_code: String::new(),
        entity_name: "account".into(),
        entity_category: EntityCategory::OutOfBox,
        record_ids: (0..n_ids as u128).map(Uuid::from_u128).collect(),
        query: "$filter=name eq 'x'".into(),
        result_count: n_ids as u64,
        changes: vec![Change {
            attribute: "name".into(),
            old: None,
            new: Some("\"x\"".into()),
        }],
        details: String::new(),
    }
}
