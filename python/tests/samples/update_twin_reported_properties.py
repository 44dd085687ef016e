# Shape of azure-iot-device's samples/sync-samples/update_twin_reported_properties.py.
import os
import random

from azure.iot.device import IoTHubDeviceClient

conn_str = os.getenv("IOTHUB_DEVICE_CONNECTION_STRING")
ca_cert = open(os.environ["IOTHUB_CA_CERT"]).read()


def main():
    device_client = IoTHubDeviceClient.create_from_connection_string(conn_str, server_verification_cert=ca_cert)
    device_client.connect()

    reported_properties = {"temperature": random.randint(320, 800) / 10}
    print("Setting reported temperature to {}".format(reported_properties["temperature"]))
    device_client.patch_twin_reported_properties(reported_properties)

    twin = device_client.get_twin()
    print("Twin reported temperature is {}".format(twin["reported"]["temperature"]))

    device_client.shutdown()


if __name__ == "__main__":
    main()
