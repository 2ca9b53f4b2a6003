//! The head's IAM role and instance profile, made by bootstrap when the head's
//! `node_config` names none. Its inline policy allows what the autoscaler does
//! and nothing more: launch instances and tag them as it launches them; start,
//! stop, terminate and retag only instances tagged with a Ray cluster name; read
//! what it launches into; and pass only `ray-*` roles to the instances it launches.

use ray_providers::ProviderError;
use serde_json::json;

use crate::api::Api;

/// The role's and the instance profile's name.
pub const NAME: &str = "ray-rs-autoscaler-v1";
/// The inline policy's name.
pub const POLICY_NAME: &str = "ray-rs-autoscaler";

/// The trust policy: EC2 instances may take the role.
pub fn assume_role_policy() -> String {
    json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]
    })
    .to_string()
}

/// What the head's autoscaler may do.
pub fn autoscaler_policy() -> String {
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "Launch",
                "Effect": "Allow",
                "Action": "ec2:RunInstances",
                "Resource": "*"
            },
            {
                "Sid": "TagWhatItLaunches",
                "Effect": "Allow",
                "Action": "ec2:CreateTags",
                "Resource": "arn:aws:ec2:*:*:instance/*",
                "Condition": {"StringEquals": {"ec2:CreateAction": "RunInstances"}}
            },
            {
                "Sid": "RetagClusterInstances",
                "Effect": "Allow",
                "Action": "ec2:CreateTags",
                "Resource": "arn:aws:ec2:*:*:instance/*",
                "Condition": {"StringLike": {"ec2:ResourceTag/ray-cluster-name": "*"}}
            },
            {
                "Sid": "ManageClusterInstances",
                "Effect": "Allow",
                "Action": ["ec2:StartInstances", "ec2:StopInstances", "ec2:TerminateInstances"],
                "Resource": "arn:aws:ec2:*:*:instance/*",
                "Condition": {"StringLike": {"ec2:ResourceTag/ray-cluster-name": "*"}}
            },
            {
                "Sid": "Read",
                "Effect": "Allow",
                "Action": [
                    "ec2:DescribeInstances",
                    "ec2:DescribeInstanceTypes",
                    "ec2:DescribeSubnets",
                    "ec2:DescribeSecurityGroups",
                    "ec2:DescribeKeyPairs",
                    "ec2:DescribeImages"
                ],
                "Resource": "*"
            },
            {
                "Sid": "PassRoleToWorkers",
                "Effect": "Allow",
                "Action": "iam:PassRole",
                "Resource": "arn:aws:iam::*:role/ray-*",
                "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}
            }
        ]
    })
    .to_string()
}

/// The instance profile's ARN, made (with its role and policy) if missing.
pub async fn ensure_profile(api: &Api) -> Result<String, ProviderError> {
    let profile = match api.run("GetInstanceProfile", || api.iam.get_instance_profile().instance_profile_name(NAME).send()).await {
        Ok(out) => out.instance_profile().cloned(),
        Err(e) if e.message.contains("NoSuchEntity") => None,
        Err(e) => return Err(e),
    };
    let profile = match profile {
        Some(p) => p,
        None => {
            tracing::info!(profile = NAME, "Creating the IAM instance profile for the head node");
            let out = api.run("CreateInstanceProfile", || api.iam.create_instance_profile().instance_profile_name(NAME).send()).await?;
            out.instance_profile().cloned().ok_or_else(|| ProviderError::new(ray_providers::ErrorClass::Other, "CreateInstanceProfile returned no profile"))?
        }
    };
    if profile.roles().is_empty() {
        let have_role = match api.run("GetRole", || api.iam.get_role().role_name(NAME).send()).await {
            Ok(_) => true,
            Err(e) if e.message.contains("NoSuchEntity") => false,
            Err(e) => return Err(e),
        };
        if !have_role {
            tracing::info!(role = NAME, "Creating the IAM role for the head node");
            let trust = assume_role_policy();
            api.run("CreateRole", || {
                api.iam
                    .create_role()
                    .role_name(NAME)
                    .assume_role_policy_document(trust.clone())
                    .description("Ray cluster head: the autoscaler launches and ends the cluster's instances")
                    .send()
            })
            .await?;
        }
        api.run("AddRoleToInstanceProfile", || api.iam.add_role_to_instance_profile().instance_profile_name(NAME).role_name(NAME).send())
            .await?;
    }
    // Put (or put back) the policy on our role every time: a run cut short after
    // CreateRole would otherwise leave a role that may do nothing. A role the
    // user put in the profile is theirs, and left alone.
    let ours = profile.roles().first().is_none_or(|r| r.role_name() == NAME);
    if ours {
        let policy = autoscaler_policy();
        api.run("PutRolePolicy", || api.iam.put_role_policy().role_name(NAME).policy_name(POLICY_NAME).policy_document(policy.clone()).send())
            .await?;
    }
    Ok(profile.arn().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_never_allows_everything() {
        let p: serde_json::Value = serde_json::from_str(&autoscaler_policy()).unwrap();
        for s in p["Statement"].as_array().unwrap() {
            let actions: Vec<&str> = match &s["Action"] {
                serde_json::Value::String(a) => vec![a.as_str()],
                a => a.as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect(),
            };
            assert!(actions.iter().all(|a| !a.contains('*')), "no wildcard actions: {actions:?}");
        }
        let terminate = p["Statement"].as_array().unwrap().iter().find(|s| s["Sid"] == "ManageClusterInstances").unwrap();
        assert!(terminate["Condition"].to_string().contains("ray-cluster-name"), "only Ray's instances can be ended");
    }
}
