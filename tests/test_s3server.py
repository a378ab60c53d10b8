from tests.s3server import S3Server


def test_s3_server_speaks_http(s3: S3Server) -> None:
    client = s3.client()
    client.create_bucket(Bucket="smoke")
    client.put_object(Bucket="smoke", Key="a/b.txt", Body=b"hello")
    assert client.get_object(Bucket="smoke", Key="a/b.txt")["Body"].read() == b"hello"
    s3.reset()
    assert client.list_buckets()["Buckets"] == []
