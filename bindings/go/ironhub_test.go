package ironhub

// Runs against the emulator started by tests/c_abi.rs, which builds this test binary
// (`go test -c`), passes the emulator's address in IRONHUB_TEST_* variables and answers the
// "@@ verb args" requests this test prints (see tests/c/common.h). Without those variables
// (a plain `go test`), the test is skipped.

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var stdin = bufio.NewReader(os.Stdin)

func harness(t *testing.T, format string, args ...any) string {
	t.Helper()
	fmt.Printf("@@ "+format+"\n", args...)
	line, err := stdin.ReadString('\n')
	if err != nil {
		t.Fatalf("harness request: %v", err)
	}
	line = strings.TrimRight(line, "\r\n")
	if strings.HasPrefix(line, "ERR") {
		t.Fatalf("harness: %s", line)
	}
	return line
}

func env(t *testing.T, name string) string {
	v := os.Getenv(name)
	if v == "" {
		t.Skipf("%s not set: run through `cargo test -p ironhub --test c_abi go_binding`", name)
	}
	return v
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func emulatorOptions(t *testing.T) *Options {
	mqttPort, _ := strconv.Atoi(env(t, "IRONHUB_TEST_MQTT_PORT"))
	httpsPort, _ := strconv.Atoi(env(t, "IRONHUB_TEST_HTTPS_PORT"))
	opts := NewOptions()
	must(t, opts.SetServerVerificationCert(env(t, "IRONHUB_TEST_CA_PEM")))
	must(t, opts.SetPorts(uint16(mqttPort), uint16(httpsPort)))
	must(t, opts.SetOperationTimeout(20))
	return opts
}

// sasToken signs a device token the way IoT Hub expects (for NewFromSasToken).
func sasToken(t *testing.T, host, deviceID, keyB64 string) string {
	key, err := base64.StdEncoding.DecodeString(keyB64)
	must(t, err)
	sr := url.QueryEscape(host + "/devices/" + deviceID)
	se := strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(sr + "\n" + se))
	sig := url.QueryEscape(base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	return fmt.Sprintf("SharedAccessSignature sr=%s&sig=%s&se=%s", sr, sig, se)
}

func TestAgainstEmulator(t *testing.T) {
	ctx := context.Background()
	cs := env(t, "IRONHUB_TEST_DEVICE_CS")
	deviceID := env(t, "IRONHUB_TEST_DEVICE_ID")

	if got, want := Version(), env(t, "IRONHUB_TEST_VERSION"); got != want {
		t.Fatalf("Version() = %q, want %q", got, want)
	}

	opts := emulatorOptions(t)
	defer opts.Close()
	if err := opts.SetKeepAlive(0); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("SetKeepAlive(0) = %v, want ErrInvalidArgument", err)
	}
	if _, err := NewFromConnectionString("HostName=h;DeviceId=d", nil); !IsCode(err, ErrInvalidArgument) {
		t.Fatalf("incomplete connection string: %v", err)
	} else if !strings.Contains(err.Error(), "IRONHUB_ERROR_INVALID_ARGUMENT") {
		t.Fatalf("error text %q", err)
	}
	must(t, opts.SetProductInfo("ironhub-go-test"))
	must(t, opts.SetConnectionRetry(true))
	must(t, opts.SetConnectionRetryInterval(1))
	must(t, opts.SetEnsureDesiredProperties(true))
	must(t, opts.SetAutoConnect(true))
	must(t, opts.SetCipher(""))

	c, err := NewFromConnectionString(cs, opts)
	must(t, err)
	defer func() { must(t, c.Close()) }()

	var connects atomic.Int32
	var lastReason atomic.Uint32
	must(t, c.OnConnectionStateChange(func(connected bool, reason Reason) {
		lastReason.Store(uint32(reason))
		if connected {
			connects.Add(1)
		}
	}))
	must(t, c.OnBackgroundException(func(err error) { t.Logf("background: %v", err) }))
	must(t, c.Connect(ctx))
	if !c.Connected() {
		t.Fatal("not connected after Connect")
	}
	waitFor(t, "connection callback", func() bool { return connects.Load() == 1 })
	if Reason(lastReason.Load()) != ReasonOK {
		t.Fatalf("reason %d", lastReason.Load())
	}

	m := NewMessage([]byte(`{"go":true}`))
	defer m.Close()
	must(t, m.SetContentType("application/json"))
	must(t, m.SetContentEncoding("utf-8"))
	must(t, m.SetMessageID("mid-1"))
	must(t, m.SetCorrelationID("cid-1"))
	must(t, m.SetUserID("uid-1"))
	must(t, m.SetExpiryTimeUTC("2030-01-01T00:00:00Z"))
	must(t, m.SetProperty("lang", "go"))
	if err := m.SetExpiryTimeUTC("tomorrow"); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("bad expiry: %v", err)
	}
	if v, ok := m.Property("lang"); !ok || v != "go" {
		t.Fatalf("Property(lang) = %q, %v", v, ok)
	}
	f := m.Fields()
	if f.MessageID != "mid-1" || f.CorrelationID != "cid-1" || f.UserID != "uid-1" || f.ContentEncoding != "utf-8" ||
		f.ExpiryTimeUTC != "2030-01-01T00:00:00Z" || f.Properties["lang"] != "go" || string(f.Data) != `{"go":true}` {
		t.Fatalf("fields %+v", f)
	}
	must(t, c.SendMessage(ctx, m))

	var wg sync.WaitGroup
	var failed atomic.Int32
	for i := 0; i < 10; i++ {
		wg.Add(1)
		must(t, c.SendMessageAsync(m, "", func(err error) {
			if err != nil {
				failed.Add(1)
			}
			wg.Done()
		}))
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d async sends failed", failed.Load())
	}
	sec := NewMessage([]byte("sec"))
	must(t, sec.SetAsSecurityMessage())
	must(t, c.SendMessage(ctx, sec))
	sec.Close()
	if n := harness(t, "events %s", deviceID); n != "12" {
		t.Fatalf("hub received %s messages, want 12", n)
	}

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := c.SendMessage(cancelled, m); !errors.Is(err, context.Canceled) {
		t.Fatalf("send with a cancelled context: %v", err)
	}

	must(t, c.PatchTwinReportedProperties(ctx, `{"binding":"go"}`))
	twin, err := c.GetTwin(ctx)
	must(t, err)
	if !strings.Contains(twin, `"binding":"go"`) {
		t.Fatalf("twin %s", twin)
	}
	if err := c.PatchTwinReportedProperties(ctx, `{broken`); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("bad JSON: %v", err)
	}

	patches := make(chan string, 4)
	must(t, c.OnTwinDesiredPropertiesPatchReceived(func(p string) { patches <- p }))
	harness(t, "desired %s {\"from\":\"go\"}", deviceID)
	select {
	case p := <-patches:
		if !strings.Contains(p, `"from":"go"`) {
			t.Fatalf("patch %s", p)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no desired patch")
	}

	answered := make(chan error, 1)
	must(t, c.OnMethodRequestReceived(func(r MethodRequest) {
		answered <- c.SendMethodResponse(ctx, r.RequestID, 200, `{"echo":`+r.PayloadJSON+`}`)
	}))
	if reply := harness(t, "invoke %s - ping {\"n\":5}", deviceID); !strings.HasPrefix(reply, "200 ") || !strings.Contains(reply, `"n":5`) {
		t.Fatalf("invoke reply %q", reply)
	}
	// The invoker has its answer before the responder sees its PUBACK: wait for the send itself.
	select {
	case err := <-answered:
		must(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("SendMethodResponse did not complete")
	}

	received := make(chan Received, 1)
	must(t, c.OnMessageReceived(func(r Received) { received <- r }))
	harness(t, "c2d %s from-go-test", deviceID)
	select {
	case r := <-received:
		if string(r.Data) != "from-go-test" || r.Properties["k"] != "v" {
			t.Fatalf("C2D %+v", r)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no C2D message")
	}

	// Cleared handlers never run again.
	must(t, c.OnTwinDesiredPropertiesPatchReceived(nil))
	harness(t, "desired %s {\"from\":\"go-again\"}", deviceID)
	time.Sleep(300 * time.Millisecond)
	if len(patches) != 0 {
		t.Fatal("cleared handler ran")
	}

	// Invoking a method needs an Edge module client: a device client gets a clear error.
	if _, err := c.InvokeMethod(ctx, deviceID, "", `{"methodName":"x","payload":null}`); err == nil {
		t.Fatal("InvokeMethod on a device client succeeded")
	}

	must(t, c.Shutdown(ctx))
	if err := c.SendMessage(ctx, m); !errors.Is(err, ErrShutDown) {
		t.Fatalf("send after shutdown: %v", err)
	}
}

// The other factories, UpdateSasToken and the token handler, each against the emulator.
func TestFactories(t *testing.T) {
	ctx := context.Background()
	host := env(t, "IRONHUB_TEST_HOSTNAME")
	deviceID := env(t, "IRONHUB_TEST_DEVICE_ID") + "-go-factories"
	cs := harness(t, "device %s", deviceID)
	key := strings.SplitN(cs[strings.Index(cs, "SharedAccessKey=")+len("SharedAccessKey="):], ";", 2)[0]
	opts := emulatorOptions(t)
	defer opts.Close()

	c, err := NewFromSymmetricKey(key, host, deviceID, opts)
	must(t, err)
	must(t, c.Connect(ctx))
	must(t, c.Close())

	token := sasToken(t, host, deviceID, key)
	c, err = NewFromSasToken(token, opts)
	must(t, err)
	must(t, c.OnNewSasTokenRequired(func() {}))
	must(t, c.Connect(ctx))
	must(t, c.UpdateSasToken(ctx, sasToken(t, host, deviceID, key)))
	m := NewMessage([]byte("after renewal"))
	must(t, c.SendMessage(ctx, m))
	m.Close()
	must(t, c.Close())

	c, err = NewFromX509Certificate(env(t, "IRONHUB_TEST_X509_CERT"), env(t, "IRONHUB_TEST_X509_KEY"), "", host,
		env(t, "IRONHUB_TEST_X509_DEVICE_ID"), "", opts)
	must(t, err)
	must(t, c.Connect(ctx))
	must(t, c.Close())

	for _, name := range []string{"IOTEDGE_WORKLOADURI", "EdgeHubConnectionString"} {
		os.Unsetenv(name)
	}
	if _, err := NewFromEdgeEnvironment(opts); err == nil {
		t.Fatal("NewFromEdgeEnvironment without an Edge environment succeeded")
	}
}

// The cross-surface validation table (tests/validation_cases.json) through Go.
func TestValidationTable(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "tests", "validation_cases.json"))
	if path := os.Getenv("IRONHUB_VALIDATION_CASES"); path != "" {
		raw, err = os.ReadFile(path)
	}
	must(t, err)
	var table struct {
		Cases []struct{ Rule, Value, Expect, Contains string }
	}
	must(t, json.Unmarshal(raw, &table))
	if len(table.Cases) == 0 {
		t.Fatal("no cases")
	}
	for _, tc := range table.Cases {
		var err error
		n, _ := strconv.Atoi(tc.Value)
		o := NewOptions()
		switch tc.Rule {
		case "expiry_time_utc":
			m := NewMessage(nil)
			err = m.SetExpiryTimeUTC(tc.Value)
			m.Close()
		case "property_key":
			m := NewMessage(nil)
			err = m.SetProperty(tc.Value, "v")
			m.Close()
		case "proxy_type":
			err = o.SetProxy(tc.Value, "127.0.0.1", 3128, "", "")
		case "keep_alive":
			err = o.SetKeepAlive(uint32(n))
		case "cipher":
			err = o.SetCipher(tc.Value)
		case "max_queued_messages":
			err = o.SetMaxQueuedMessages(uint32(n))
		case "max_queued_bytes":
			err = o.SetMaxQueuedBytes(uint64(n))
		case "x509_sastoken_ttl":
			must(t, o.SetSasTokenTTL(uint32(n)))
			_, err = NewFromX509Certificate("/nonexistent/cert.pem", "/nonexistent/key.pem", "", "hub.example", "dev", "", o)
		case "sastoken_sastoken_ttl":
			must(t, o.SetSasTokenTTL(uint32(n)))
			_, err = NewFromSasToken("SharedAccessSignature sr=x", o)
		default:
			t.Fatalf("unknown rule %s", tc.Rule)
		}
		o.Close()
		switch {
		case tc.Expect == "ok" && err != nil:
			t.Errorf("%s(%q): want ok, got %v", tc.Rule, tc.Value, err)
		case tc.Expect == "invalid_argument" && !errors.Is(err, ErrInvalidArgument):
			t.Errorf("%s(%q): want ErrInvalidArgument, got %v", tc.Rule, tc.Value, err)
		case tc.Contains != "" && (err == nil || !strings.Contains(err.Error(), tc.Contains)):
			t.Errorf("%s(%q): error %v does not mention %q", tc.Rule, tc.Value, err, tc.Contains)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
