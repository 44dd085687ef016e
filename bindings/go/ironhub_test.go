package ironhub

// Runs against the emulator started by tests/c_abi.rs, which builds this test binary
// (`go test -c`), passes the emulator's address in IRONHUB_TEST_* variables and answers the
// "@@ verb args" requests this test prints (see tests/c/common.h). Without those variables
// (a plain `go test`), the test is skipped.

import (
	"bufio"
	"fmt"
	"os"
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

func TestAgainstEmulator(t *testing.T) {
	cs := env(t, "IRONHUB_TEST_DEVICE_CS")
	deviceID := env(t, "IRONHUB_TEST_DEVICE_ID")
	mqttPort, _ := strconv.Atoi(env(t, "IRONHUB_TEST_MQTT_PORT"))
	httpsPort, _ := strconv.Atoi(env(t, "IRONHUB_TEST_HTTPS_PORT"))

	if got, want := Version(), env(t, "IRONHUB_TEST_VERSION"); got != want {
		t.Fatalf("Version() = %q, want %q", got, want)
	}

	opts := NewOptions()
	defer opts.Close()
	if err := opts.SetKeepAlive(0); !IsCode(err, ErrInvalidArgument) {
		t.Fatalf("SetKeepAlive(0) = %v, want ErrInvalidArgument", err)
	}
	if _, err := NewFromConnectionString("HostName=h;DeviceId=d", nil); !IsCode(err, ErrInvalidArgument) {
		t.Fatalf("incomplete connection string: %v", err)
	} else if !strings.Contains(err.Error(), "IRONHUB_ERROR_INVALID_ARGUMENT") {
		t.Fatalf("error text %q", err)
	}
	must(t, opts.SetServerVerificationCert(env(t, "IRONHUB_TEST_CA_PEM")))
	must(t, opts.SetPorts(uint16(mqttPort), uint16(httpsPort)))
	must(t, opts.SetOperationTimeout(20))
	must(t, opts.SetProductInfo("ironhub-go-test"))

	c, err := NewFromConnectionString(cs, opts)
	must(t, err)
	defer c.Close()

	var connects atomic.Int32
	must(t, c.OnConnectionStateChange(func(connected bool, reason uint32) {
		if connected {
			connects.Add(1)
		}
	}))
	must(t, c.Connect())
	if !c.Connected() {
		t.Fatal("not connected after Connect")
	}
	waitFor(t, "connection callback", func() bool { return connects.Load() == 1 })

	m := NewMessage([]byte(`{"go":true}`))
	defer m.Close()
	must(t, m.SetContentType("application/json"))
	must(t, m.SetProperty("lang", "go"))
	if v, ok := m.Property("lang"); !ok || v != "go" {
		t.Fatalf("Property(lang) = %q, %v", v, ok)
	}
	must(t, c.SendMessage(m))

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
	if n := harness(t, "events %s", deviceID); n != "11" {
		t.Fatalf("hub received %s messages, want 11", n)
	}

	must(t, c.PatchTwinReportedProperties(`{"binding":"go"}`))
	twin, err := c.GetTwin()
	must(t, err)
	if !strings.Contains(twin, `"binding":"go"`) {
		t.Fatalf("twin %s", twin)
	}
	if err := c.PatchTwinReportedProperties(`{broken`); !IsCode(err, ErrInvalidArgument) {
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
	must(t, c.OnMethodRequestReceived(func(rid, name, payload string) {
		answered <- c.SendMethodResponse(rid, 200, `{"echo":`+payload+`}`)
	}))
	if reply := harness(t, "invoke %s - ping {\"n\":5}", deviceID); !strings.HasPrefix(reply, "200 ") || !strings.Contains(reply, `"n":5`) {
		t.Fatalf("invoke reply %q", reply)
	}
	// The invoker has its answer before the responder sees its PUBACK: wait for the send itself,
	// so closing the client later cannot cancel it (and no t.Errorf runs after the test ends).
	select {
	case err := <-answered:
		if err != nil {
			t.Fatalf("SendMethodResponse: %v", err)
		}
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

	must(t, c.Shutdown())
	if err := c.SendMessage(m); !IsCode(err, ErrShutDown) {
		t.Fatalf("send after shutdown: %v", err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
