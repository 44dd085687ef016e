# Shape of azure-iot-device's samples/sync-samples/receive_message.py.
import os
import threading

from azure.iot.device import IoTHubDeviceClient

conn_str = os.getenv("IOTHUB_DEVICE_CONNECTION_STRING")
ca_cert = open(os.environ["IOTHUB_CA_CERT"]).read()
done = threading.Event()


def main():
    device_client = IoTHubDeviceClient.create_from_connection_string(conn_str, server_verification_cert=ca_cert)

    def message_handler(message):
        print("the data in the message received was ")
        print(message.data)
        print("custom properties are")
        print(message.custom_properties)
        done.set()

    device_client.on_message_received = message_handler
    print("READY", flush=True)
    done.wait(float(os.getenv("SAMPLE_TIMEOUT", "30")))
    device_client.shutdown()


if __name__ == "__main__":
    main()
