"""Django's HTTP handling on the thread pool (swarm/core/http_asgi.py)."""
import io

from swarm.core.http_asgi import FILE_BLOCK_SIZE, DjangoWSGIHandler, FileWrapper


class Tracked(io.BytesIO):
    closed_by_wrapper = False

    def close(self):
        self.closed_by_wrapper = True
        super().close()


def test_files_stream_in_large_blocks_and_are_closed():
    data = bytes(range(256)) * (3 * FILE_BLOCK_SIZE // 256 + 7)
    handle = Tracked(data)
    wrapper = FileWrapper(handle, 4096)  # FileResponse's 4 KiB default is raised to the large block
    blocks = list(wrapper)
    assert b"".join(blocks) == data
    assert [len(block) for block in blocks[:-1]] == [FILE_BLOCK_SIZE] * 3
    wrapper.close()
    assert handle.closed_by_wrapper


def test_the_wsgi_handler_offers_the_file_wrapper(db):
    captured = {}

    def start_response(status, headers, exc_info=None):
        captured["status"] = status

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/healthz", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80",
               "wsgi.input": io.BytesIO(b""), "wsgi.url_scheme": "http", "HTTP_HOST": "127.0.0.1"}
    body = b"".join(DjangoWSGIHandler()(environ, start_response))
    assert captured["status"].startswith("200") and b'"ok"' in body
    assert environ["wsgi.file_wrapper"] is FileWrapper
