#![allow(dead_code)] // each test binary uses part of it
//! What the AWS tests share: the SDK pointed at a moto server, and moto's images.

use ray_tests::moto::Moto;

/// Exports `moto`'s SDK environment (endpoint, dummy credentials) to this process.
pub fn export_env(moto: &Moto) {
    for (k, v) in moto.env() {
        // SAFETY: nextest runs each test in a process of its own, and this runs
        // before the test starts any thread that reads the environment.
        unsafe { std::env::set_var(k, v) };
    }
}

/// An SDK config for `moto` in us-west-2 with dummy credentials.
pub async fn sdk_config(moto: &Moto) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-west-2"))
        .endpoint_url(&moto.endpoint)
        .credentials_provider(aws_sdk_ec2::config::Credentials::new("testing", "testing", None, None, "test"))
        .load()
        .await
}

/// One of the images moto knows.
pub async fn an_image(ec2: &aws_sdk_ec2::Client) -> String {
    let images = ec2.describe_images().send().await.expect("moto lists its images");
    images.images().iter().filter_map(|i| i.image_id()).next().expect("moto has images").to_string()
}
