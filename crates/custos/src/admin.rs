//! Administration from the command line (SPEC §11): users, teams, roles, instances, solutions,
//! backups and restores, each through the public API of a running server — so each is checked
//! and recorded exactly as the same action in the console would be.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value as Json, json};

use crate::audit_remote::Remote;
use crate::client::{Client, encode, print_table};
use crate::out::outln;

/// `custos user …` (System Administrator of the instance).
#[derive(Debug, Subcommand)]
pub(crate) enum UserCommand {
    /// The users of an instance, with their roles.
    List,
    /// Create a user who signs in with a password, optionally with roles.
    Create {
        /// Sign-in name, e.g. ann@contoso.test.
        upn: String,
        /// The first password.
        #[arg(long, env = "CUSTOS_NEW_USER_PASSWORD", hide_env_values = true)]
        new_password: String,
        /// Full name (default: the sign-in name).
        #[arg(long)]
        name: Option<String>,
        /// Roles to assign, e.g. --role "Basic User".
        #[arg(long)]
        role: Vec<String>,
    },
    /// Assign a security role.
    AddRole { upn: String, role: String },
    /// Take a security role away.
    RemoveRole { upn: String, role: String },
    /// Disable a user: their sign-in and every session of theirs are refused at once.
    Disable { upn: String },
    /// Enable a disabled user again.
    Enable { upn: String },
    /// Set a user's password (every session of theirs ends).
    ResetPassword {
        upn: String,
        /// The new password.
        #[arg(long, env = "CUSTOS_NEW_USER_PASSWORD", hide_env_values = true)]
        new_password: String,
    },
    /// Delete a user with every role and team membership they hold.
    Delete {
        upn: String,
        /// The user's sign-in name again, to confirm.
        #[arg(long)]
        confirm: String,
    },
}

/// `custos team …`.
#[derive(Debug, Subcommand)]
pub(crate) enum TeamCommand {
    /// The teams of an instance.
    List,
    /// Create a team.
    Create { name: String },
    /// Add a user to a team (they hold the team's roles).
    AddMember { team: String, upn: String },
    /// Take a user out of a team.
    RemoveMember { team: String, upn: String },
    /// Assign a security role to a team.
    AddRole { team: String, role: String },
}

/// `custos role …`.
#[derive(Debug, Subcommand)]
pub(crate) enum RoleCommand {
    /// The security roles of an instance.
    List,
    /// Create a custom role (no privileges yet).
    Create { name: String },
    /// Add privileges to a custom role, e.g. prvReadaccount prvExportaccount.
    Grant {
        role: String,
        #[arg(required = true)]
        privileges: Vec<String>,
    },
    /// The privileges of a custom role.
    Privileges { role: String },
}

/// `custos instance …` (tenant global admin; the admin center).
#[derive(Debug, Subcommand)]
pub(crate) enum InstanceCommand {
    /// The tenant's instances.
    List,
    /// Create an instance, seeded like `main`.
    Create {
        name: String,
        /// Create it paid rather than as a trial.
        #[arg(long)]
        paid: bool,
        /// Keep its records in this PostgreSQL database (a URL or connection string) rather
        /// than the server's own: the unit of sharding (servers on `--postgres` only).
        #[arg(long)]
        database: Option<String>,
    },
    /// Convert a trial instance to paid.
    Convert { name: String },
    /// Delete an instance and its records and backups (its audit events stay).
    Delete {
        name: String,
        /// The instance's name again, to confirm.
        #[arg(long)]
        confirm: String,
    },
}

/// `custos solution …` (System Administrator).
#[derive(Debug, Subcommand)]
pub(crate) enum SolutionCommand {
    /// The solutions installed in an instance.
    List,
    /// Import a solution file (JSON: the `CustomizationFile` of `ImportSolution`).
    Import { file: PathBuf },
    /// Remove a solution and everything it brought.
    Remove { unique_name: String },
}

/// The administration commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Admin {
    /// Users of an instance.
    User {
        #[command(flatten)]
        remote: Remote,
        /// The instance.
        #[arg(long, global = true, default_value = "main")]
        instance: String,
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Teams of an instance.
    Team {
        #[command(flatten)]
        remote: Remote,
        #[arg(long, global = true, default_value = "main")]
        instance: String,
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: TeamCommand,
    },
    /// Security roles of an instance.
    Role {
        #[command(flatten)]
        remote: Remote,
        #[arg(long, global = true, default_value = "main")]
        instance: String,
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: RoleCommand,
    },
    /// The tenant's instances (admin center).
    Instance {
        #[command(flatten)]
        remote: Remote,
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: InstanceCommand,
    },
    /// Solutions of an instance.
    Solution {
        #[command(flatten)]
        remote: Remote,
        #[arg(long, global = true, default_value = "main")]
        instance: String,
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: SolutionCommand,
    },
    /// Back up an instance (a consistent snapshot), or list its backups with --list.
    Backup {
        #[command(flatten)]
        remote: Remote,
        instance: String,
        /// A label for the backup.
        #[arg(long)]
        label: Option<String>,
        /// List the instance's backups instead.
        #[arg(long)]
        list: bool,
        #[arg(long)]
        json: bool,
    },
    /// Restore an instance from one of its backups (the audit log is never rolled back).
    Restore {
        #[command(flatten)]
        remote: Remote,
        instance: String,
        /// The backup's id (`custos backup INSTANCE --list`).
        #[arg(long)]
        backup: String,
        #[arg(long)]
        json: bool,
    },
}

/// An instance's Web API.
struct Api<'a> {
    client: &'a Client,
    root: String,
}

impl Api<'_> {
    fn get(&self, path: &str) -> anyhow::Result<Json> {
        self.client.get(&format!("{}{path}", self.root))
    }

    fn post(&self, path: &str, body: &Json) -> anyhow::Result<crate::client::Answer> {
        self.client.post(&format!("{}{path}", self.root), body)
    }

    fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.client
            .call(Method::DELETE, &format!("{}{path}", self.root), None)
            .map(drop)
    }

    /// The id of the one record of `entity` (entity set `set`) whose `attribute` is `value`.
    fn find(
        &self,
        entity: &str,
        set: &str,
        attribute: &str,
        value: &str,
    ) -> anyhow::Result<String> {
        let filter = format!("{attribute} eq '{}'", value.replace('\'', "''"));
        let found = self.get(&format!("{set}?$filter={}", encode(&filter)))?;
        found["value"]
            .get(0)
            .and_then(|r| r[format!("{entity}id")].as_str())
            .map(str::to_string)
            .with_context(|| format!("no {entity} with {attribute} '{value}'"))
    }

    fn user(&self, upn: &str) -> anyhow::Result<String> {
        self.find("systemuser", "systemusers", "domainname", upn)
    }

    fn team(&self, name: &str) -> anyhow::Result<String> {
        self.find("team", "teams", "name", name)
    }

    fn role(&self, name: &str) -> anyhow::Result<String> {
        self.find("role", "roles", "name", name)
    }

    /// Assigns the role named `role` to the user `user_id`.
    fn give_role(&self, user_id: &str, role: &str) -> anyhow::Result<()> {
        let role_id = self.role(role)?;
        self.associate(
            &format!("systemusers({user_id})"),
            "systemuserroles_association",
            &format!("roles({role_id})"),
        )
    }

    /// Associates `holder` (`systemusers(<id>)` or `teams(<id>)`) through `relation`.
    fn associate(&self, holder: &str, relation: &str, target: &str) -> anyhow::Result<()> {
        let body = json!({"@odata.id": format!("{}{}{target}", self.client.base, self.root)});
        self.post(&format!("{holder}/{relation}/$ref"), &body)
            .map(drop)
    }
}

/// Runs one administration command; returns what to print.
pub(crate) fn run(command: &Admin) -> anyhow::Result<(Json, bool)> {
    let (remote, json) = match command {
        Admin::User { remote, json, .. }
        | Admin::Team { remote, json, .. }
        | Admin::Role { remote, json, .. }
        | Admin::Instance { remote, json, .. }
        | Admin::Solution { remote, json, .. }
        | Admin::Backup { remote, json, .. }
        | Admin::Restore { remote, json, .. } => (remote, *json),
    };
    let client = remote.sign_in()?;
    let api = |instance: &str| Api {
        client: &client,
        root: format!("/{}/api/data/v9.2/", encode(instance)),
    };
    let output = match command {
        Admin::User {
            instance, command, ..
        } => user(&api(instance), command)?,
        Admin::Team {
            instance, command, ..
        } => team(&api(instance), command)?,
        Admin::Role {
            instance, command, ..
        } => role(&api(instance), command)?,
        Admin::Solution {
            instance, command, ..
        } => solution(&api(instance), command)?,
        Admin::Instance { command, .. } => instance(&client, command)?,
        Admin::Backup {
            instance,
            label,
            list,
            ..
        } => {
            let path = format!("/api/admin/instances/{}/backups", encode(instance));
            if *list {
                client.get(&path)?
            } else {
                client.post(&path, &json!({"label": label}))?.json
            }
        }
        Admin::Restore {
            instance, backup, ..
        } => {
            client
                .post(
                    &format!("/api/admin/instances/{}/restore", encode(instance)),
                    &json!({"backupId": backup}),
                )?
                .json
        }
    };
    Ok((output, json))
}

fn done(what: String) -> Json {
    json!({"done": what})
}

fn user(api: &Api<'_>, command: &UserCommand) -> anyhow::Result<Json> {
    Ok(match command {
        UserCommand::List => {
            api.get("systemusers?$select=domainname,fullname,isdisabled,applicationid")?
        }
        UserCommand::Create {
            upn,
            new_password,
            name,
            role,
        } => {
            let id = api
                .post(
                    "systemusers",
                    &json!({"domainname": upn, "fullname": name.as_deref().unwrap_or(upn),
                            "password": new_password}),
                )?
                .entity_id()?;
            for role in role {
                api.give_role(&id, role)?;
            }
            json!({"systemuserid": id, "domainname": upn, "roles": role})
        }
        UserCommand::AddRole { upn, role } => {
            api.give_role(&api.user(upn)?, role)?;
            done(format!("{upn} holds {role}"))
        }
        UserCommand::RemoveRole { upn, role } => {
            let (id, role_id) = (api.user(upn)?, api.role(role)?);
            api.delete(&format!(
                "systemusers({id})/systemuserroles_association({role_id})/$ref"
            ))?;
            done(format!("{upn} no longer holds {role}"))
        }
        UserCommand::Disable { upn } | UserCommand::Enable { upn } => {
            let disable = matches!(command, UserCommand::Disable { .. });
            let id = api.user(upn)?;
            api.client.call(
                Method::PATCH,
                &format!("{}systemusers({id})", api.root),
                Some(&json!({"isdisabled": disable})),
            )?;
            done(format!(
                "{upn} is {}",
                if disable { "disabled" } else { "enabled" }
            ))
        }
        UserCommand::ResetPassword { upn, new_password } => {
            let id = api.user(upn)?;
            api.post(
                &format!("systemusers({id})/Microsoft.Dynamics.CRM.ResetPassword"),
                &json!({"NewPassword": new_password}),
            )?;
            done(format!("{upn} has a new password; their sessions ended"))
        }
        UserCommand::Delete { upn, confirm } => {
            anyhow::ensure!(
                confirm == upn,
                "--confirm must repeat the sign-in name '{upn}'"
            );
            let id = api.user(upn)?;
            api.delete(&format!("systemusers({id})"))?;
            done(format!("{upn} is deleted"))
        }
    })
}

fn team(api: &Api<'_>, command: &TeamCommand) -> anyhow::Result<Json> {
    Ok(match command {
        TeamCommand::List => api.get("teams?$select=name,description")?,
        TeamCommand::Create { name } => {
            let id = api.post("teams", &json!({"name": name}))?.entity_id()?;
            json!({"teamid": id, "name": name})
        }
        TeamCommand::AddMember { team, upn } => {
            let (team_id, user_id) = (api.team(team)?, api.user(upn)?);
            api.associate(
                &format!("teams({team_id})"),
                "teammembership_association",
                &format!("systemusers({user_id})"),
            )?;
            done(format!("{upn} joined {team}"))
        }
        TeamCommand::RemoveMember { team, upn } => {
            let (team_id, user_id) = (api.team(team)?, api.user(upn)?);
            api.delete(&format!(
                "teams({team_id})/teammembership_association({user_id})/$ref"
            ))?;
            done(format!("{upn} left {team}"))
        }
        TeamCommand::AddRole { team, role } => {
            let (team_id, role_id) = (api.team(team)?, api.role(role)?);
            api.associate(
                &format!("teams({team_id})"),
                "teamroles_association",
                &format!("roles({role_id})"),
            )?;
            done(format!("{team} holds {role}"))
        }
    })
}

fn role(api: &Api<'_>, command: &RoleCommand) -> anyhow::Result<Json> {
    Ok(match command {
        RoleCommand::List => api.get("roles?$select=name")?,
        RoleCommand::Create { name } => {
            let id = api.post("roles", &json!({"name": name}))?.entity_id()?;
            json!({"roleid": id, "name": name})
        }
        RoleCommand::Grant { role, privileges } => {
            let id = api.role(role)?;
            let privileges: Vec<Json> = privileges
                .iter()
                .map(|p| json!({"PrivilegeName": p}))
                .collect();
            api.post(
                &format!("roles({id})/Microsoft.Dynamics.CRM.AddPrivilegesRole"),
                &json!({"Privileges": privileges}),
            )?;
            api.get(&format!(
                "roles({id})/Microsoft.Dynamics.CRM.RetrieveRolePrivilegesRole()"
            ))?
        }
        RoleCommand::Privileges { role } => {
            let id = api.role(role)?;
            api.get(&format!(
                "roles({id})/Microsoft.Dynamics.CRM.RetrieveRolePrivilegesRole()"
            ))?
        }
    })
}

fn solution(api: &Api<'_>, command: &SolutionCommand) -> anyhow::Result<Json> {
    Ok(match command {
        SolutionCommand::List => api.get("solutions")?,
        SolutionCommand::Import { file } => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            let customization: Json = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", file.display()))?;
            api.post(
                "ImportSolution",
                &json!({"CustomizationFile": customization}),
            )?
            .json
        }
        SolutionCommand::Remove { unique_name } => {
            let id = api.find("solution", "solutions", "uniquename", unique_name)?;
            api.delete(&format!("solutions({id})"))?;
            done(format!("{unique_name} removed"))
        }
    })
}

fn instance(client: &Client, command: &InstanceCommand) -> anyhow::Result<Json> {
    Ok(match command {
        InstanceCommand::List => client.get("/api/admin/instances")?,
        InstanceCommand::Create {
            name,
            paid,
            database,
        } => {
            client
                .post(
                    "/api/admin/instances",
                    &json!({
                        "name": name,
                        "state": if *paid { "paid" } else { "trial" },
                        "database": database,
                    }),
                )?
                .json
        }
        InstanceCommand::Convert { name } => {
            client
                .post(
                    &format!("/api/admin/instances/{}/convert", encode(name)),
                    &json!({}),
                )?
                .json
        }
        InstanceCommand::Delete { name, confirm } => {
            anyhow::ensure!(
                name == confirm,
                "--confirm must repeat the instance's name ('{name}') to delete it"
            );
            client.call(
                Method::DELETE,
                &format!("/api/admin/instances/{}", encode(name)),
                None,
            )?;
            done(format!("instance {name} deleted"))
        }
    })
}

/// Prints an answer: JSON, or a table of its rows (or of it).
pub(crate) fn print(output: &Json, json: bool) {
    if json {
        outln!("{output:#}");
        return;
    }
    if let Some(done) = output["done"].as_str() {
        outln!("{done}");
        return;
    }
    let rows: Vec<Json> = match output["value"].as_array() {
        Some(rows) => rows
            .iter()
            .map(|r| match r.as_object() {
                Some(object) => Json::Object(
                    object
                        .iter()
                        .filter(|(k, _)| !k.starts_with('@'))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                ),
                None => r.clone(),
            })
            .collect(),
        None => vec![output.clone()],
    };
    print_table(&rows, None);
}
