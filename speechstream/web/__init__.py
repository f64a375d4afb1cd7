"""Static files of the live-captioning web page served by `speechstream serve`."""
