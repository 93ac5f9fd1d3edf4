//! A test certificate authority for Alexa's Signature-256: RSA keys and a root, an
//! intermediate and `echo-api.amazon.com` leaves (valid, expired, not yet valid, without the
//! SAN, and under an untrusted root) come out, with a signer for request bodies. Used by the
//! tests and by `hark bench`, never by the request path. The keys are made once per process
//! (RSA key generation is the slow part).

use std::sync::OnceLock;

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::RsaKeyPair;
use base64::Engine as _;
use chrono::{DateTime, Datelike, Duration, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use super::verify::ECHO_API_DOMAIN;

/// The RSA keys of the test PKI.
pub struct Keys {
    pub root: RsaKeyPair,
    pub rogue: RsaKeyPair,
    pub leaf: RsaKeyPair,
}

/// The keys, made on first use.
pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let make = || {
            RsaKeyPair::generate(KeySize::Rsa2048)
                .unwrap_or_else(|e| panic!("RSA key generation failed: {e}"))
        };
        Keys {
            root: make(),
            rogue: make(),
            leaf: make(),
        }
    })
}

/// An aws-lc-rs key as rcgen wants it.
pub fn rcgen_key(key: &RsaKeyPair) -> KeyPair {
    let der = key
        .as_der()
        .unwrap_or_else(|e| panic!("PKCS#8 export failed: {e}"));
    let pkcs8 = rustls_pki_types::PrivatePkcs8KeyDer::from(der.as_ref().to_vec());
    KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_RSA_SHA256)
        .unwrap_or_else(|e| panic!("rcgen key failed: {e}"))
}

/// A CA certificate's parameters, valid 2020–2035.
pub fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2035, 1, 1);
    p
}

/// PEM root and chains (leaf then intermediate) of the test PKI.
pub struct Pki {
    pub root_pem: String,
    /// Valid at the chosen time, under the trusted root.
    pub good_chain: String,
    /// Ended the day before the chosen time.
    pub expired_chain: String,
    /// Starts the day after the chosen time.
    pub future_chain: String,
    /// Valid, but its SAN is `echo-api.amazon.com.evil.com`.
    pub no_san_chain: String,
    /// Valid, under a root of the same name with another key (not trusted).
    pub rogue_chain: String,
}

impl Pki {
    /// Certificates whose validity is judged at `now`.
    pub fn for_time(now: DateTime<Utc>) -> Pki {
        let k = keys();
        let root_key = rcgen_key(&k.root);
        let rogue_key = rcgen_key(&k.rogue);
        let leaf_key = rcgen_key(&k.leaf);
        let fail = |e: rcgen::Error| -> ! { panic!("test certificate failed: {e}") };

        let root_params = ca_params("Hark Test Root");
        let root_cert = root_params
            .self_signed(&root_key)
            .unwrap_or_else(|e| fail(e));
        let root = Issuer::new(root_params, &root_key);
        // The intermediate reuses the root's key pair under its own name.
        let inter_params = ca_params("Hark Test Intermediate");
        let inter_cert = inter_params
            .signed_by(&root_key, &root)
            .unwrap_or_else(|e| fail(e));
        let inter = Issuer::new(inter_params, &root_key);

        let rogue_root = Issuer::new(ca_params("Hark Test Root"), &rogue_key);
        let rogue_inter_params = ca_params("Hark Test Intermediate");
        let rogue_inter_cert = rogue_inter_params
            .signed_by(&rogue_key, &rogue_root)
            .unwrap_or_else(|e| fail(e));
        let rogue_inter = Issuer::new(rogue_inter_params, &rogue_key);

        let day = Duration::days(1);
        let leaf = |san: &str,
                    from: DateTime<Utc>,
                    to: DateTime<Utc>,
                    issuer: &Issuer<'_, &KeyPair>| {
            let mut p = CertificateParams::new(vec![san.to_owned()]).unwrap_or_else(|e| fail(e));
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, ECHO_API_DOMAIN);
            p.distinguished_name = dn;
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            p.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            p.not_before = rcgen::date_time_ymd(from.year(), from.month() as u8, from.day() as u8);
            p.not_after = rcgen::date_time_ymd(to.year(), to.month() as u8, to.day() as u8);
            p.signed_by(&leaf_key, issuer)
                .unwrap_or_else(|e| fail(e))
                .pem()
        };
        let with_inter = |leaf_pem: String| format!("{leaf_pem}{}", inter_cert.pem());
        let (from, to) = (now - day * 59, now + day * 300);
        Pki {
            root_pem: root_cert.pem(),
            good_chain: with_inter(leaf(ECHO_API_DOMAIN, from, to, &inter)),
            expired_chain: with_inter(leaf(ECHO_API_DOMAIN, now - day * 400, now - day, &inter)),
            future_chain: with_inter(leaf(ECHO_API_DOMAIN, now + day, to, &inter)),
            no_san_chain: with_inter(leaf("echo-api.amazon.com.evil.com", from, to, &inter)),
            rogue_chain: format!(
                "{}{}",
                leaf(ECHO_API_DOMAIN, from, to, &rogue_inter),
                rogue_inter_cert.pem()
            ),
        }
    }
}

/// The base64 `Signature-256` of `body` by the test leaf key.
pub fn sign(body: &[u8]) -> String {
    let key = &keys().leaf;
    let mut sig = vec![0; key.public_modulus_len()];
    key.sign(
        &aws_lc_rs::signature::RSA_PKCS1_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        body,
        &mut sig,
    )
    .unwrap_or_else(|e| panic!("signing failed: {e}"));
    base64::engine::general_purpose::STANDARD.encode(sig)
}
