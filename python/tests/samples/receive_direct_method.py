# Shape of azure-iot-device's samples/sync-samples/receive_direct_method.py.
import os
import threading

from azure.iot.device import IoTHubDeviceClient, MethodResponse

conn_str = os.getenv("IOTHUB_DEVICE_CONNECTION_STRING")
ca_cert = open(os.environ["IOTHUB_CA_CERT"]).read()
done = threading.Event()


def main():
    device_client = IoTHubDeviceClient.create_from_connection_string(conn_str, server_verification_cert=ca_cert)

    def method_request_handler(method_request):
        if method_request.name == "method1":
            payload = {"result": True, "data": "some data"}
            status = 200
            print("executed method1")
        else:
            payload = {"result": False, "data": "unknown method"}
            status = 400
            print("executed unknown method: " + method_request.name)
        method_response = MethodResponse.create_from_method_request(method_request, status, payload)
        device_client.send_method_response(method_response)
        done.set()

    device_client.on_method_request_received = method_request_handler
    print("READY", flush=True)
    done.wait(float(os.getenv("SAMPLE_TIMEOUT", "30")))
    device_client.shutdown()


if __name__ == "__main__":
    main()
