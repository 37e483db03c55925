"""Unit tier: pure logic, no servers."""
