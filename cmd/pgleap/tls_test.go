package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgleap/pgleap/internal/pgtest"
	"github.com/pgleap/pgleap/internal/pgtest/datatest"
)

// TestTLSAndPasswords migrates between two servers that take pgleap's role only over TLS
// with a client certificate, verified up to a self-signed CA (sslmode=verify-full), the
// replication stream included; a wrong CA is refused. A role with a password logs in with
// PGPASSWORD, and a wrong password is refused without being printed.
func TestTLSAndPasswords(t *testing.T) {
	pki := newTestPKI(t)
	source := pgtest.Start(t, pgtest.SourceMajor())
	target := pgtest.Start(t, pgtest.TargetMajor())
	for _, s := range []*pgtest.Server{source, target} {
		requireCertificates(t, s, pki)
	}
	source.Exec(t, "postgres", "CREATE DATABASE shop")
	target.Exec(t, "postgres", "CREATE DATABASE shop")
	source.Exec(t, "shop", `CREATE TABLE orders (id int PRIMARY KEY, note text);
		INSERT INTO orders SELECT g, 'n' || g FROM generate_series(1, 1000) g`)
	tlsConn := func(s *pgtest.Server, rootCA string) string {
		return fmt.Sprintf("host=127.0.0.1 port=%d dbname=shop user=certuser sslmode=verify-full sslrootcert=%s sslcert=%s sslkey=%s",
			s.Port, rootCA, pki.clientCert, pki.clientKey)
	}
	sourceConn, targetConn := tlsConn(source, pki.caCert), tlsConn(target, pki.caCert)
	conns := []string{"--source", sourceConn, "--target", targetConn}

	// A server whose certificate is not signed by the CA given is refused.
	code, _, stderr := pgleap(t, nil, "check", "--source", tlsConn(source, pki.otherCACert), "--target", targetConn)
	if code != exitCannotRun || !strings.Contains(stderr, "certificate") || !strings.Contains(stderr, "sslrootcert") {
		t.Errorf("check with the wrong root CA: exit %d, %s", code, stderr)
	}
	// Without a client certificate, the server refuses the role.
	code, _, stderr = pgleap(t, nil, "check", "--source", fmt.Sprintf("host=127.0.0.1 port=%d dbname=shop user=certuser sslmode=verify-full sslrootcert=%s", source.Port, pki.caCert),
		"--target", targetConn)
	if code != exitCannotRun || !strings.Contains(stderr, "client certificate") || !strings.Contains(stderr, "sslcert") {
		t.Errorf("check without a client certificate: exit %d, %s", code, stderr)
	}

	migrate, out := startCLI(t, append([]string{"migrate"}, conns...)...)
	waitFor(t, "streaming", func() bool { return datatest.Scalar(t, source.ConnString("shop"), streamingSQL) == "1" })
	if ssl := datatest.Scalar(t, source.ConnString("shop"), `SELECT bool_and(s.ssl)::text FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
		WHERE a.usename = 'certuser'`); ssl != "true" {
		t.Errorf("pgleap's sessions on the source use TLS: %s", ssl)
	}
	source.Exec(t, "shop", "UPDATE orders SET note = 'changed' WHERE id <= 10; INSERT INTO orders VALUES (1001, 'new')")
	want := datatest.Scalar(t, source.ConnString("shop"), "SELECT pg_current_wal_insert_lsn()::text")
	waitFor(t, "the changes over TLS", func() bool {
		return lsnAtLeast(t, datatest.Scalar(t, target.ConnString("shop"), "SELECT coalesce(applied_lsn, '0/0')::text FROM pgleap.replication"), want)
	})
	if code, stdout, stderr := pgleap(t, nil, append([]string{"verify"}, conns...)...); code != exitOK {
		t.Errorf("verify over TLS: exit %d\n%s%s", code, stdout, stderr)
	}
	if err := migrate.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := migrate.Wait(); err != nil {
		t.Fatalf("migrate over TLS: %v\n%s", err, out)
	}
	if strings.Contains(out.String(), pki.clientKey) && strings.Contains(out.String(), "BEGIN") {
		t.Error("migrate printed key material")
	}

	// Passwords: from PGPASSWORD they work; a wrong one is refused and never printed.
	source.Exec(t, "postgres", "SET password_encryption = 'scram-sha-256'; CREATE ROLE pwuser LOGIN PASSWORD 'right-pw-1'")
	pwConn := fmt.Sprintf("host=127.0.0.1 port=%d dbname=shop user=pwuser sslmode=disable", source.Port)
	// libpq's variables are read from the process environment, as libpq does.
	t.Setenv("PGPASSWORD", "wrong-pw-2")
	code, stdout, stderr := pgleap(t, nil, "status", "--target", pwConn)
	if code != exitCannotRun || !strings.Contains(stderr, "password authentication failed") || !strings.Contains(stderr, "check the password") ||
		strings.Contains(stdout+stderr, "wrong-pw-2") {
		t.Errorf("a wrong password: exit %d, %s%s", code, stdout, stderr)
	}
	code, stdout, stderr = pgleap(t, nil, "status", "--target", pwConn+" password=wrong-pw-3")
	if code != exitCannotRun || strings.Contains(stdout+stderr, "wrong-pw-3") {
		t.Errorf("a wrong password in the connection string: exit %d, %s%s", code, stdout, stderr)
	}
	t.Setenv("PGPASSWORD", "right-pw-1")
	code, _, stderr = pgleap(t, nil, "status", "--target", pwConn)
	if code != exitCannotRun || !strings.Contains(stderr, "holds no pgleap migration") {
		t.Errorf("the right password from PGPASSWORD: exit %d, %s", code, stderr)
	}
	// From a password file, named by passfile= or PGPASSFILE, as libpq reads ~/.pgpass.
	os.Unsetenv("PGPASSWORD")
	passfile := filepath.Join(t.TempDir(), "pgpass")
	if err := os.WriteFile(passfile, fmt.Appendf(nil, "127.0.0.1:%d:shop:pwuser:right-pw-1\n", source.Port), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = pgleap(t, nil, "status", "--target", pwConn+" passfile="+passfile)
	if code != exitCannotRun || !strings.Contains(stderr, "holds no pgleap migration") {
		t.Errorf("the password from passfile=: exit %d, %s", code, stderr)
	}
	t.Setenv("PGPASSFILE", passfile)
	code, _, stderr = pgleap(t, nil, "status", "--target", pwConn)
	if code != exitCannotRun || !strings.Contains(stderr, "holds no pgleap migration") {
		t.Errorf("the password from PGPASSFILE: exit %d, %s", code, stderr)
	}
}

// testPKI is a self-signed CA with a server certificate for 127.0.0.1 and a client
// certificate for certuser, and a second CA that signed none of them.
type testPKI struct {
	dir                                        string
	caCert, otherCACert, serverCert, serverKey string
	clientCert, clientKey                      string
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	p := &testPKI{dir: dir}
	ca, caKey := newCertificate(t, "pgleap test CA", nil, nil, true, nil)
	other, _ := newCertificate(t, "another CA", nil, nil, true, nil)
	server, serverKey := newCertificate(t, "127.0.0.1", ca, caKey, false, []net.IP{net.ParseIP("127.0.0.1")})
	client, clientKey := newCertificate(t, "certuser", ca, caKey, false, nil)
	write := func(name string, block *pem.Block) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	p.caCert = write("ca.crt", &pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})
	p.otherCACert = write("other-ca.crt", &pem.Block{Type: "CERTIFICATE", Bytes: other.Raw})
	p.serverCert = write("server.crt", &pem.Block{Type: "CERTIFICATE", Bytes: server.Raw})
	p.serverKey = write("server.key", keyBlock(t, serverKey))
	p.clientCert = write("client.crt", &pem.Block{Type: "CERTIFICATE", Bytes: client.Raw})
	p.clientKey = write("client.key", keyBlock(t, clientKey))
	return p
}

func newCertificate(t *testing.T, name string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, isCA bool, ips []net.IP) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	template := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: ips, BasicConstraintsValid: true, IsCA: isCA,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	if isCA {
		template.KeyUsage |= x509.KeyUsageCertSign
	}
	if parent == nil {
		parent, parentKey = template, key
	}
	raw, err := x509.CreateCertificate(rand.Reader, template, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(raw)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func keyBlock(t *testing.T, key *ecdsa.PrivateKey) *pem.Block {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return &pem.Block{Type: "PRIVATE KEY", Bytes: der}
}

// requireCertificates turns TLS on for server s with the test PKI and lets certuser in only
// over TLS with a client certificate (pg_hba.conf's cert method), for SQL and replication.
func requireCertificates(t *testing.T, s *pgtest.Server, pki *testPKI) {
	t.Helper()
	var owner struct{ uid, gid int }
	info, err := os.Stat(s.DataDir())
	if err != nil {
		t.Fatal(err)
	}
	st := info.Sys().(*syscall.Stat_t)
	owner.uid, owner.gid = int(st.Uid), int(st.Gid)
	for _, f := range []struct{ from, to string }{{pki.serverCert, "server.crt"}, {pki.serverKey, "server.key"}, {pki.caCert, "root.crt"}} {
		raw, err := os.ReadFile(f.from)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(s.DataDir(), f.to)
		if err := os.WriteFile(path, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(path, owner.uid, owner.gid); err != nil {
			t.Fatal(err)
		}
	}
	hbaPath := filepath.Join(s.DataDir(), "pg_hba.conf")
	hba, err := os.ReadFile(hbaPath)
	if err != nil {
		t.Fatal(err)
	}
	rules := "hostssl all certuser 127.0.0.1/32 cert\nhostssl replication certuser 127.0.0.1/32 cert\n" +
		"host all certuser 127.0.0.1/32 reject\nhost replication certuser 127.0.0.1/32 reject\n" +
		"host all pwuser 127.0.0.1/32 scram-sha-256\n"
	if err := os.WriteFile(hbaPath, append([]byte(rules), hba...), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{"CREATE ROLE certuser LOGIN SUPERUSER REPLICATION", "ALTER SYSTEM SET ssl = on",
		"ALTER SYSTEM SET ssl_cert_file = 'server.crt'", "ALTER SYSTEM SET ssl_key_file = 'server.key'",
		"ALTER SYSTEM SET ssl_ca_file = 'root.crt'", "SELECT pg_reload_conf()"} {
		s.Exec(t, "postgres", sql) // one at a time: ALTER SYSTEM refuses a transaction block
	}
	// The reload is asynchronous: wait until a TLS session is possible.
	waitFor(t, "TLS on the server", func() bool {
		return datatest.Scalar(t, s.ConnString("postgres"), "SELECT current_setting('ssl')") == "on"
	})
}
